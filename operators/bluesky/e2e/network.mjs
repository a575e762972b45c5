// A local ATProto network for `make e2e-bluesky`: @atproto/dev-env's
// TestNetwork (PLC, PDS, AppView and what the AppView needs, on loopback,
// over the Postgres and Redis that run.sh started), with two accounts:
// the bot and alice. Writes {pds, plc, bot, alice} as JSON to the file named by
// argv[2] once ready, keeps the AppView indexing, and closes on SIGTERM.

import { writeFileSync } from 'node:fs'
import { TestNetwork } from '@atproto/dev-env'

const out = process.argv[2]
const network = await TestNetwork.create({ dbPostgresSchema: 'switchboard' })
const sc = network.getSeedClient()
const bot = { handle: 'switchboard-bot.test', email: 'bot@test.com', password: 'bot-e2e-password' }
const alice = { handle: 'alice.test', email: 'alice@test.com', password: 'alice-e2e-password' }
await sc.createAccount('bot', bot)
await sc.createAccount('alice', alice)
await network.processAll()
const info = {
  pds: network.pds.url,
  plc: network.plc.url,
  bot: { ...bot, did: sc.dids.bot },
  alice: { ...alice, did: sc.dids.alice },
}
writeFileSync(out, JSON.stringify(info))
console.error(`network ready: pds ${network.pds.url}, appview ${network.bsky.url}`)

let closing = false
process.on('SIGTERM', async () => {
  closing = true
  await network.close()
  process.exit(0)
})
// The AppView follows the PDS on its own; this only hurries it along so
// notifications and threads show up promptly.
while (!closing) {
  try {
    await network.processAll()
  } catch (e) {
    console.error(`processAll: ${e}`)
  }
  await new Promise((r) => setTimeout(r, 200))
}
