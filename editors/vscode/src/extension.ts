// The cnnspec extension: a thin client for `cnnspec lsp`, which provides diagnostics, hover,
// inlay hints, completion, formatting, go to definition, the outline and the network diagram
// ("cnnspec: Show Network Diagram"). Highlighting comes from the TextMate grammar in syntaxes/,
// so it works without the server.
import * as path from "path";
import * as vscode from "vscode";
import {
  type Executable,
  LanguageClient,
  type LanguageClientOptions,
} from "vscode-languageclient/node";
import { messagePage, withPolicy } from "./diagramPage";

const DEFAULT_COMMAND = ["cnnspec", "lsp"];
// The server's own request: {uri} -> {html} (the page `cnnspec graph -o OUT.html` writes, for
// the document's current text) or {error}.
const DIAGRAM_REQUEST = "cnnspec/diagram";

let client: LanguageClient | undefined;
// One diagram panel per spec, by the spec's URI.
const diagrams = new Map<string, vscode.WebviewPanel>();

interface DiagramReply {
  html?: string;
  error?: string;
}

async function drawDiagram(uri: string, panel: vscode.WebviewPanel): Promise<void> {
  if (client === undefined) {
    panel.webview.html = messagePage(
      "The cnnspec language server is not running: see the cnnspec output channel.",
    );
    return;
  }
  try {
    const reply = await client.sendRequest<DiagramReply | null>(DIAGRAM_REQUEST, { uri });
    panel.webview.html =
      reply?.html !== undefined
        ? withPolicy(reply.html)
        : messagePage(`No diagram: ${reply?.error ?? "the server sent none"}.`);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    panel.webview.html = messagePage(`No diagram: ${detail}`);
  }
}

async function showDiagram(): Promise<void> {
  const document = vscode.window.activeTextEditor?.document;
  if (document === undefined || document.languageId !== "cnnspec") {
    void vscode.window.showInformationMessage("Open a cnnspec spec (.cnn) to see its network.");
    return;
  }
  const uri = document.uri.toString();
  let panel = diagrams.get(uri);
  if (panel === undefined) {
    const created = vscode.window.createWebviewPanel(
      "cnnspec.diagram",
      `Network: ${path.basename(document.uri.path)}`,
      vscode.ViewColumn.Beside,
      { enableScripts: true, retainContextWhenHidden: true, localResourceRoots: [] },
    );
    created.onDidDispose(() => diagrams.delete(uri));
    diagrams.set(uri, created);
    panel = created;
  } else {
    panel.reveal(vscode.ViewColumn.Beside);
  }
  await drawDiagram(uri, panel);
}

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
    vscode.commands.registerCommand("cnnspec.showDiagram", showDiagram),
    // A diagram follows its spec: redrawn each time the spec is saved.
    vscode.workspace.onDidSaveTextDocument(async (saved) => {
      const panel = diagrams.get(saved.uri.toString());
      if (panel !== undefined) {
        await drawDiagram(saved.uri.toString(), panel);
      }
    }),
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
