// The bench's peer: Unleash (unleash-server, installed by bench/peers/install_unleash.sh into
// instance/peers/unleash, never committed), started on 127.0.0.1 with a given database and port.
//
//   node bench/peers/unleash_server.js <postgresql://user[:password]@host[:port]/database> <port>
//
// (a unix socket as libpq writes it: postgresql://user@/database?host=/socket/dir)
//
// Environment: UNLEASH_DIR (where the install is; default instance/peers/unleash),
// INIT_ADMIN_API_TOKENS / INIT_FRONTEND_API_TOKENS (Unleash's own: API tokens created at start,
// e.g. "*:*.<secret>" and "default:development.<secret>"; the bench sets both).
// No version check, no telemetry, no request log, logs at warn; otherwise Unleash's defaults
// (one Node process, as `unleash-server` runs it), so the figure is Unleash as shipped.
'use strict';

const path = require('node:path');
const { pathToFileURL } = require('node:url');

function database(url) {
  const parsed = new URL(url);
  return {
    user: decodeURIComponent(parsed.username) || 'postgres',
    password: decodeURIComponent(parsed.password) || undefined,
    host: parsed.searchParams.get('host') || parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || 5432),
    database: decodeURIComponent(parsed.pathname.slice(1)),
    ssl: false, // 127.0.0.1 or a unix socket only
  };
}

async function main() {
  const [databaseUrl, port] = process.argv.slice(2);
  if (!databaseUrl || !port) {
    console.error('usage: node unleash_server.js <database url> <port>');
    process.exit(2);
  }
  // createConfig reads `telemetry: false` as "unset" (options.telemetry || env): the env var decides.
  process.env.SEND_TELEMETRY = 'false';
  process.env.CHECK_VERSION = 'false';
  const dir = process.env.UNLEASH_DIR || path.resolve(__dirname, '..', '..', 'instance', 'peers', 'unleash');
  const entry = path.join(dir, 'node_modules', 'unleash-server', 'dist', 'lib', 'server-impl.js');
  const unleash = await import(pathToFileURL(entry).href);
  const server = await unleash.start({
    db: database(databaseUrl),
    server: { host: '127.0.0.1', port: Number(port), enableRequestLogger: false, gracefulShutdownEnable: true },
    versionCheck: { enable: false },
    telemetry: false,
    logLevel: unleash.LogLevel.warn,
    authentication: { type: 'open-source', enableApiToken: true, createAdminUser: true },
  });
  console.log(`unleash ${server.config.server.unleashUrl} listening on 127.0.0.1:${port}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
