// Strips the types from sync-users.ts (the README's hook code) into build/sync-users.mjs, which
// server.mjs runs: Node 20 cannot run TypeScript itself. Nothing else is changed.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import ts from "typescript";

const source = readFileSync(new URL("./sync-users.ts", import.meta.url), "utf8");
const { outputText, diagnostics } = ts.transpileModule(source, {
  compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  reportDiagnostics: true,
  fileName: "sync-users.ts",
});
if (diagnostics?.length) {
  console.error(ts.formatDiagnostics(diagnostics, ts.createCompilerHost({})));
  process.exit(1);
}
mkdirSync(new URL("./build/", import.meta.url), { recursive: true });
writeFileSync(new URL("./build/sync-users.mjs", import.meta.url), outputText);
