#!/usr/bin/env node
// A stock third-party tus server (@tus/server + @tus/file-store) for interop tests and benchmarks.
//
//   node tus-server.mjs --dir DIR [--host 127.0.0.1] [--port 0] [--sha256-on-finish]
//
// Prints exactly one line, `listening http://HOST:PORT/files/`, once the socket accepts
// connections, so a parent process can read the URL (port 0 picks a free port). Stops cleanly on
// SIGTERM/SIGINT.
//
// Facts about @tus/server 2.4.5 that dockd relies on (checked by tests/interop): it ignores
// Upload-Checksum (never answers 460), a 409 carries no Upload-Offset (the client must HEAD), it
// rejects an empty `Upload-Metadata:` header, and a GET of a finished upload can crash it, so no
// caller should GET. Uploads land in DIR/<id> with a DIR/<id>.json info file beside them.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { FileStore } from '@tus/file-store';
import { Server } from '@tus/server';

const USAGE = 'usage: tus-server.mjs --dir DIR [--host 127.0.0.1] [--port 0] [--sha256-on-finish]';

function parseOptions() {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      dir: { type: 'string' },
      'sha256-on-finish': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const port = Number.parseInt(values.port, 10);
  if (!values.dir || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(USAGE);
  }
  return { host: values.host, port, dir: values.dir, sha256OnFinish: values['sha256-on-finish'] };
}

/** SHA-256 (hex) of a file, streamed so a large upload never sits in memory. */
function sha256File(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

function buildTusServer({ dir, sha256OnFinish }) {
  const options = {
    path: '/files',
    datastore: new FileStore({ directory: dir }),
    // The client must see the header we add on the final PATCH.
    exposedHeaders: ['Upload-Sha256'],
  };
  if (sha256OnFinish) {
    // Shows that a stock @tus/server *can* report a whole-file hash, via a hook, on the response
    // to the last PATCH only. It is unsigned and lost with that response; dockd's receiver instead
    // signs a receipt that any later HEAD repeats.
    options.onUploadFinish = async (_req, upload) => {
      const digest = await sha256File(upload.storage?.path ?? join(dir, upload.id));
      return { headers: { 'Upload-Sha256': digest } };
    };
  }
  return new Server(options);
}

function main() {
  let options;
  try {
    options = parseOptions();
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  const tusServer = buildTusServer(options);
  const httpServer = http.createServer((req, res) => tusServer.handle(req, res));
  httpServer.on('error', (err) => {
    process.stderr.write(`tus-server: ${err.message}\n`);
    process.exit(1);
  });
  httpServer.listen(options.port, options.host, () => {
    const { port } = httpServer.address();
    // A single write of a whole line: the parent reads it line by line from a pipe.
    process.stdout.write(`listening http://${options.host}:${port}/files/\n`);
  });
  const stop = () => {
    httpServer.close(() => process.exit(0));
    httpServer.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
