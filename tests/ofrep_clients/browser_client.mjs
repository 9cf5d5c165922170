// The browser SDK with the official OFREP web provider, bundled by esbuild for the browser test
// (tests/web/test_browser_ofrep.py): window.segmentsOfrep.start(baseUrl, targetingKey, pollMs)
// sets the provider up (bulk evaluation, then polling with If-None-Match); details(flag) is what
// application code would get; changes counts the provider's ConfigurationChanged events.
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const state = { changes: 0 };

async function start(baseUrl, targetingKey, pollInterval) {
  OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, () => {
    state.changes += 1;
  });
  await OpenFeature.setContext({ targetingKey, plan: 'ignored' });
  await OpenFeature.setProviderAndWait(new OFREPWebProvider({ baseUrl, pollInterval }));
}

function details(flag) {
  const d = OpenFeature.getClient().getBooleanDetails(flag, false);
  return {
    value: d.value,
    reason: d.reason,
    variant: d.variant ?? null,
    errorCode: d.errorCode ?? null,
    flagMetadata: d.flagMetadata,
  };
}

window.segmentsOfrep = { start, details, state, stop: () => OpenFeature.close() };
