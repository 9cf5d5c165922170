// The JavaScript server SDK with the official OFREP provider, against a live Segments server.
// node server_client.mjs <baseUrl> <cases.json> [<token>]
// cases.json: [{"flag": "SLUG", "targetingKey": "42" | null, "default": false}, ...]
// Prints one JSON line: the evaluation details of each case (value, reason, variant,
// errorCode, flagMetadata), as the SDK hands them to application code.
import { readFileSync } from 'node:fs';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const [baseUrl, casesPath, token] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesPath, 'utf8'));
const headers = token ? { 'X-API-Key': token } : {};
await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl, headers }));
const client = OpenFeature.getClient();
const results = [];
for (const c of cases) {
  const context = c.targetingKey === null ? {} : { targetingKey: c.targetingKey, plan: 'ignored' };
  const d = await client.getBooleanDetails(c.flag, c.default ?? false, context);
  results.push({
    flag: d.flagKey,
    value: d.value,
    reason: d.reason,
    variant: d.variant ?? null,
    errorCode: d.errorCode ?? null,
    flagMetadata: d.flagMetadata,
  });
}
console.log(JSON.stringify(results));
await OpenFeature.close();
