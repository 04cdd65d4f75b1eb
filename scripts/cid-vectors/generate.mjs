// Regenerates tests/p2p/cid_vectors.json with the real IPFS UnixFS importer (js-ipfs / Helia).
// Usage: cd scripts/cid-vectors && npm ci && node generate.mjs
// Content is the deterministic pattern of p2p/testdata.py: chunk i (1 MiB) is the 8-byte
// big-endian index i followed by bytes 0..255 repeated, cut at `size`.
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const MiB = 1 << 20
const base = new Uint8Array(MiB)
for (let j = 0; j < MiB; j++) base[j] = j & 0xff

function * pattern (size) {
  for (let i = 0, left = size; left > 0; i++, left -= MiB) {
    const block = new Uint8Array(base)
    new DataView(block.buffer).setBigUint64(0, BigInt(i))
    yield block.subarray(0, Math.min(left, MiB))
  }
}

// Blocks are hashed by the importer; we only need the root CID, so nothing is stored.
const discard = { put: async (cid) => cid }

const options = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: MiB }),
  layout: balanced({ maxChildrenPerNode: 1024 })
}

const cases = [
  ['empty', 0],
  ['one-byte', 1],
  ['chunk-minus-1', MiB - 1],
  ['one-chunk', MiB],
  ['chunk-plus-1', MiB + 1],
  ['five-mib', 5 * MiB],
  ['five-mib-plus-3', 5 * MiB + 3],
  ['full-first-layer', 1024 * MiB],
  ['beyond-first-layer', 1025 * MiB + 12345]
]

const vectors = []
for (const [name, size] of cases) {
  let root
  for await (const entry of importer([{ content: pattern(size) }], discard, options)) root = entry
  const cid = root.cid.toString()
  console.log(name, size, cid)
  vectors.push({ name, size, content: 'pattern-v1', cid, slow: size > 64 * MiB })
}

const pkg = JSON.parse((await import('node:fs')).readFileSync(new URL('./node_modules/ipfs-unixfs-importer/package.json', import.meta.url)))
const out = {
  generator: `ipfs-unixfs-importer ${pkg.version} (scripts/cid-vectors/generate.mjs)`,
  profile: 'cidVersion=1 rawLeaves=true chunker=fixedSize(1048576) layout=balanced(1024) reduceSingleLeafToSelf=true',
  content: 'pattern-v1: chunk i = uint64_be(i) + bytes(range(256)) repeated, cut at size (see p2p/testdata.py)',
  vectors
}
const here = dirname(fileURLToPath(import.meta.url))
writeFileSync(join(here, '..', '..', 'tests', 'p2p', 'cid_vectors.json'), JSON.stringify(out, null, 2) + '\n')
