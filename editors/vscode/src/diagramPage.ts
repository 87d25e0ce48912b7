// The diagram page as a webview shows it. No vscode import: the tests load this module in Node
// and open what it makes in a headless browser.
import { randomBytes } from "crypto";

export function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// The page with a content security policy: nothing loads from anywhere, and only the page's
// own script runs (by a nonce made for this rendering).
export function withPolicy(page: string): string {
  const nonce = randomBytes(16).toString("base64");
  const policy =
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; ` +
    `style-src 'unsafe-inline'; script-src 'nonce-${nonce}';">`;
  return page
    .replace('<meta charset="utf-8">', `<meta charset="utf-8">${policy}`)
    .replace(/<script>/g, `<script nonce="${nonce}">`);
}

export function messagePage(message: string): string {
  return (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"></head>' +
    `<body style="font-family: sans-serif; padding: 1em">${escapeHtml(message)}</body></html>`
  );
}
