// Compiles contracts/src/*.sol with solc-js (standard JSON, evmVersion istanbul, optimizer on)
// into <out>/<Name>.json = {abi, bytecode, deployedBytecode, solc, sourceSha256}.
// Usage: node contracts/compile.js [outDir]   (default: contracts/build)
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const srcDir = path.join(__dirname, "src");
const outDir = process.argv[2] ? path.resolve(process.argv[2]) : path.join(__dirname, "build");
const files = fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort();
const sources = {};
const hash = crypto.createHash("sha256");
for (const f of files) {
  const content = fs.readFileSync(path.join(srcDir, f), "utf8");
  sources[f] = { content };
  hash.update(f + "\0" + content + "\0");
}
const sourceSha256 = hash.digest("hex");
const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "istanbul",
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);
fs.mkdirSync(outDir, { recursive: true });
for (const f of files) {
  for (const [name, c] of Object.entries(output.contracts[f] || {})) {
    const artifact = {
      contractName: name,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      solc: solc.version(),
      evmVersion: "istanbul",
      sourceSha256,
    };
    fs.writeFileSync(path.join(outDir, name + ".json"), JSON.stringify(artifact, null, 1) + "\n");
    console.log(`compiled ${name}: ${(c.evm.deployedBytecode.object.length / 2) | 0} bytes deployed`);
  }
}
