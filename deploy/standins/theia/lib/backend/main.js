// Stand-in for Eclipse Theia's backend, at the path and with the command line the catalogue
// uses (supervisor/conf.d/theia.conf): node /app/theia/lib/backend/main.js --hostname=H --port=P
// An HTML page on `/`; TERM closes the server and exits 0. USR2 leaves a process behind the way
// Theia's terminals can (a shell in a session of its own that outlives the backend), so a test
// can check that the pod cleans up after a service.
'use strict';

const http = require('http');
const { spawn } = require('child_process');

function option(name, fallback) {
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i += 1) {
    if (args[i].startsWith(`--${name}=`)) return args[i].slice(name.length + 3);
    if (args[i] === `--${name}` && i + 1 < args.length) return args[i + 1];
  }
  return fallback;
}

const host = option('hostname', '127.0.0.1');
const port = Number(option('port', '3000'));
const page = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
  + '<title>Coditect (stand-in)</title></head><body><h1>Coditect IDE</h1>'
  + '<p>This is the image stand-in for Eclipse Theia.</p></body></html>\n';

const server = http.createServer((request, response) => {
  response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  response.end(page);
});
server.on('error', (error) => {
  console.error(`theia-standin: cannot listen on ${host}:${port}: ${error.message}`);
  process.exit(1);
});
server.listen(port, host, () => console.log(`theia-standin: listening on ${host}:${port}`));

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
process.on('SIGUSR2', () => {
  const child = spawn('sleep', ['86400'], { detached: true, stdio: 'ignore' });
  child.unref();
  console.log(`theia-standin: left process ${child.pid} behind`);
});
