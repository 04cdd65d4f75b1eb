// Compiles contracts/src/*.sol with solc-js (standard JSON, optimizer on) into
// <out>/<Name>.json = {abi, bytecode, deployedBytecode, solc, evmVersion, sourceSha256}.
// Usage: node contracts/compile.js [outDir] [evmVersion]   (default: contracts/build homestead)
// The committed artifacts target "homestead", the oldest rules solc knows: no REVERT-dependent
// logic, no SHL/SHR/SAR, no STATICCALL, no RETURNDATASIZE, so one artifact runs both on Istanbul
// chains and on Cypherium's official genesis (no fork blocks: pre-Byzantium). bench/gas.py
// compiles an "istanbul" build beside it to measure what that costs (docs/contract.md).
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const srcDir = path.join(__dirname, "src");
const outDir = process.argv[2] ? path.resolve(process.argv[2]) : path.join(__dirname, "build");
const evmVersion = process.argv[3] || "homestead";
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
    evmVersion,
    optimizer: { enabled: true, runs: 1 },
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
// solc >= 0.8.27 warns that pre-constantinople targets are deprecated: expected here, not shown
const shown = (output.errors || []).filter((e) => !/older than constantinople is deprecated/.test(e.message));
for (const e of shown) process.stderr.write(e.formattedMessage + "\n");
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
      evmVersion,
      sourceSha256,
    };
    fs.writeFileSync(path.join(outDir, name + ".json"), JSON.stringify(artifact, null, 1) + "\n");
    console.log(`compiled ${name}: ${(c.evm.deployedBytecode.object.length / 2) | 0} bytes deployed`);
  }
}
