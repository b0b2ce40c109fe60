#!/usr/bin/env node
// serve.js --port N --orthanc http://127.0.0.1:P --dist DIR [--config app-config.js] [--host 127.0.0.1]
//
// One origin for the OHIF Viewer and Orthanc, so the browser needs no CORS:
//   /dicom-web/... and /wado...  forwarded to Orthanc (method, headers and body as received, answer streamed back)
//   /app-config.js               the file given by --config (OHIF's dist/ ships a demo config)
//   any file under DIR           served as is
//   anything else                DIR/index.html (OHIF routes client-side: /viewer, /viewer/dicomweb, ...)
// Only node's built-in modules. Logs one line per forwarded request and per error.
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const port = Number(arg('port', '0'));
const host = arg('host', '127.0.0.1');
const dist = path.resolve(arg('dist', path.join(__dirname, 'node_modules/@ohif/app/dist')));
const configFile = arg('config', path.join(__dirname, 'app-config.js'));
const orthanc = new URL(arg('orthanc', 'http://127.0.0.1:8042'));
const verbose = process.env.SERVE_VERBOSE === '1';

const types = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml',
  '.png': 'image/png', '.ico': 'image/x-icon', '.woff': 'font/woff', '.woff2': 'font/woff2',
  '.xml': 'application/xml', '.txt': 'text/plain', '.map': 'application/json', '.ttf': 'font/ttf',
};

function sendFile(res, file, status = 200) {
  fs.stat(file, (err, st) => {
    if (err || !st.isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    res.writeHead(status, {
      'Content-Type': types[path.extname(file).toLowerCase()] || 'application/octet-stream',
      'Content-Length': st.size,
      'Cache-Control': 'no-cache',
      // SharedArrayBuffer (multi-threaded decoders) needs cross-origin isolation; everything is same-origin here.
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
    });
    fs.createReadStream(file).pipe(res);
  });
}

function forward(req, res) {
  const headers = { ...req.headers, host: orthanc.host };
  delete headers.origin;
  delete headers.referer;
  const up = http.request(
    { hostname: orthanc.hostname, port: orthanc.port, method: req.method, path: req.url, headers },
    (ures) => {
      const h = { ...ures.headers, 'cross-origin-resource-policy': 'same-origin' };
      res.writeHead(ures.statusCode, h);
      ures.pipe(res);
      if (verbose || ures.statusCode >= 400) {
        console.log(`${new Date().toISOString()} ${req.method} ${req.url} -> ${ures.statusCode} (${req.headers.accept || ''})`);
      }
    },
  );
  up.on('error', (e) => {
    console.log(`${new Date().toISOString()} ${req.method} ${req.url} -> Orthanc error ${e.message}`);
    if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
    res.end(`Orthanc unreachable: ${e.message}\n`);
  });
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = decodeURIComponent(url.pathname);
  if (p.startsWith('/dicom-web/') || p === '/dicom-web' || p.startsWith('/wado')) return forward(req, res);
  if (p === '/app-config.js') return sendFile(res, configFile);
  const file = path.resolve(dist, '.' + p);
  if (file !== dist && !file.startsWith(dist + path.sep)) {
    res.writeHead(403);
    return res.end();
  }
  fs.stat(file, (err, st) => {
    if (!err && st.isFile()) return sendFile(res, file);
    // SPA fallback, except for what is clearly a missing asset
    if (/\.(js|css|wasm|map|png|svg|ico|woff2?|json)$/.test(p)) {
      if (verbose) console.log(`${new Date().toISOString()} 404 ${p}`);
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      return res.end('not found\n');
    }
    return sendFile(res, path.join(dist, 'index.html'));
  });
});
server.listen(port, host, () => {
  console.log(`serving ${dist} on http://${host}:${server.address().port}, /dicom-web -> ${orthanc.origin}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500));
