/**
 * `cake pull hf://REF` with speculation off (HfPullOptions.speculate = false, which the CLI does not
 * offer): the hubdedup scenario's baseline for what the windows cost. Run as a child, like bin/cake,
 * with the same CAKE_HOME and HF_ENDPOINT.
 */
import { hub, openStore } from "../../cli/context.js";
import { parseHfRef, pullHf } from "../../src/index.js";

const r = await pullHf(parseHfRef(process.argv[2]!), { store: openStore(), hub: hub(), speculate: false });
process.stderr.write(`${r.ref}: ${r.stats.fetchedBytes} bytes fetched, speculation off\n`);
