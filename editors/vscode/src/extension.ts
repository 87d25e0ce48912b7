// The cnnspec extension: a thin client for `cnnspec lsp`, which provides diagnostics, hover,
// inlay hints, completion, formatting, go to definition and the outline. Highlighting comes from
// the TextMate grammar in syntaxes/, so it works without the server.
import * as vscode from "vscode";
import {
  type Executable,
  LanguageClient,
  type LanguageClientOptions,
} from "vscode-languageclient/node";

const DEFAULT_COMMAND = ["cnnspec", "lsp"];

let client: LanguageClient | undefined;

function serverExecutable(): Executable {
  const configured = vscode.workspace
    .getConfiguration("cnnspec")
    .get<string[]>("server.command", DEFAULT_COMMAND);
  const [command, ...args] = configured.length > 0 ? configured : DEFAULT_COMMAND;
  const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  // No `transport`: an executable then speaks LSP over stdin and stdout. TransportKind.stdio
  // would do the same but also append `--stdio` to the arguments, which `cnnspec lsp` rejects.
  return { command, args, options: cwd === undefined ? {} : { cwd } };
}

async function startClient(
  outputChannel: vscode.OutputChannel,
  watcher: vscode.FileSystemWatcher,
): Promise<void> {
  const server = serverExecutable();
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: "file", language: "cnnspec" },
      { scheme: "untitled", language: "cnnspec" },
    ],
    synchronize: { fileEvents: watcher },
    outputChannel,
  };
  client = new LanguageClient("cnnspec", "cnnspec", server, clientOptions);
  try {
    await client.start();
  } catch (error) {
    client = undefined;
    const detail = error instanceof Error ? error.message : String(error);
    const commandLine = [server.command, ...(server.args ?? [])].join(" ");
    // Not awaited: activation must not wait for the user to dismiss the message.
    void vscode.window
      .showErrorMessage(
        `${commandLine} failed to start: ${detail}. Install cnnspec with ` +
          "`pip install 'cnnspec[lsp]'` or set cnnspec.server.command.",
        "Show Output",
        "Open Settings",
      )
      .then((choice) => {
        if (choice === "Show Output") {
          outputChannel.show();
        } else if (choice === "Open Settings") {
          void vscode.commands.executeCommand("workbench.action.openSettings", "cnnspec.server");
        }
      });
  }
}

async function stopClient(): Promise<void> {
  const running = client;
  client = undefined;
  await running?.stop();
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const outputChannel = vscode.window.createOutputChannel("cnnspec");
  const watcher = vscode.workspace.createFileSystemWatcher("**/*.cnn");
  const restart = async (): Promise<void> => {
    await stopClient();
    await startClient(outputChannel, watcher);
  };
  context.subscriptions.push(
    outputChannel,
    watcher,
    vscode.commands.registerCommand("cnnspec.restartServer", restart),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("cnnspec.server.command")) {
        await restart();
      }
    }),
  );
  await startClient(outputChannel, watcher);
}

export function deactivate(): Promise<void> {
  return stopClient();
}
