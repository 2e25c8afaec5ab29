#!/usr/bin/env node
// A stock third-party tus client (tus-js-client) uploading one file, for interop tests and
// benchmarks.
//
//   node tus-upload.mjs --endpoint URL --file PATH [--chunk-size BYTES]
//        [--metadata key=value ...] [--header 'Name: value' ...]
//        [--stop-after BYTES] [--resume-url URL]
//
// --stop-after N  abort (upload.abort(), as an application would) once the server has
//                 acknowledged at least N bytes, leaving a partial upload to resume.
// --resume-url U  continue upload U: tus-js-client HEADs it and sends from the server's offset.
//
// On exit, prints one JSON line:
//   {"url", "bytes_sent", "start_offset", "seconds", "completed"}
// bytes_sent is the offset the server last acknowledged (for a resumed upload, counted from 0 of
// the file, not of this run); start_offset is where this run began (the HEAD offset on resume);
// seconds is the wall time from start() to success or abort. Failure: exit 1 with the error on
// stderr (and no JSON); usage error: exit 2.

import { createReadStream, statSync } from 'node:fs';
import { parseArgs } from 'node:util';

import * as tus from 'tus-js-client';

const USAGE =
  'usage: tus-upload.mjs --endpoint URL --file PATH [--chunk-size BYTES] ' +
  "[--metadata key=value ...] [--header 'Name: value' ...] [--stop-after BYTES] " +
  '[--resume-url URL]';

function parseInteger(name, text, min) {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(text)}`);
  }
  return value;
}

function parseOptions() {
  const { values } = parseArgs({
    options: {
      endpoint: { type: 'string' },
      file: { type: 'string' },
      'chunk-size': { type: 'string' },
      metadata: { type: 'string', multiple: true, default: [] },
      header: { type: 'string', multiple: true, default: [] },
      'stop-after': { type: 'string' },
      'resume-url': { type: 'string' },
    },
    strict: true,
  });
  if (!values.file || !(values.endpoint || values['resume-url'])) {
    throw new Error(USAGE);
  }
  const metadata = {};
  for (const item of values.metadata) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error(`--metadata wants key=value, got ${JSON.stringify(item)}`);
    metadata[item.slice(0, eq)] = item.slice(eq + 1);
  }
  const headers = {};
  for (const item of values.header) {
    const colon = item.indexOf(':');
    if (colon <= 0) throw new Error(`--header wants 'Name: value', got ${JSON.stringify(item)}`);
    headers[item.slice(0, colon).trim()] = item.slice(colon + 1).trim();
  }
  return {
    endpoint: values.endpoint ?? null,
    file: values.file,
    // tus-js-client's own default: the whole file in one PATCH.
    chunkSize:
      values['chunk-size'] === undefined
        ? Number.POSITIVE_INFINITY
        : parseInteger('chunk-size', values['chunk-size'], 1),
    metadata,
    headers,
    stopAfter:
      values['stop-after'] === undefined ? null : parseInteger('stop-after', values['stop-after'], 1),
    resumeUrl: values['resume-url'] ?? null,
  };
}

/** Runs one upload; resolves with the JSON report, rejects with tus-js-client's error. */
function upload(options) {
  const size = statSync(options.file).size;
  return new Promise((resolve, reject) => {
    let acknowledged = 0;
    let startOffset = options.resumeUrl ? null : 0;
    let started = 0;
    let upload = null;
    const finish = (completed) => {
      resolve({
        url: upload.url,
        bytes_sent: acknowledged,
        start_offset: startOffset,
        seconds: (performance.now() - started) / 1000,
        completed,
      });
    };
    // A fs.ReadStream with a path lets tus-js-client read any byte range of the file, which it
    // needs to resume at an arbitrary server offset.
    upload = new tus.Upload(createReadStream(options.file), {
      endpoint: options.endpoint,
      uploadUrl: options.resumeUrl,
      uploadSize: size,
      chunkSize: options.chunkSize,
      metadata: options.metadata,
      headers: options.headers,
      // Interop tests want the first error, not a retry that could mask it.
      retryDelays: null,
      onAfterResponse: (req, res) => {
        const ok = res.getStatus() >= 200 && res.getStatus() < 300;
        if (req.getMethod() === 'HEAD' && ok && startOffset === null) {
          startOffset = Number.parseInt(res.getHeader('Upload-Offset'), 10);
          acknowledged = startOffset;
        } else if (req.getMethod() === 'POST' && startOffset === null) {
          startOffset = 0; // the resume URL was gone and tus-js-client created a new upload
        }
      },
      onChunkComplete: (_chunkSize, bytesAccepted, bytesTotal) => {
        acknowledged = bytesAccepted;
        // Stopping on the last chunk would leave nothing to resume: let it complete instead.
        if (options.stopAfter !== null && bytesAccepted >= options.stopAfter && bytesAccepted < bytesTotal) {
          // abort() inside this callback stops tus-js-client before it sends the next PATCH.
          upload.abort().then(() => finish(false), reject);
        }
      },
      onSuccess: () => {
        acknowledged = size;
        finish(true);
      },
      onError: reject,
    });
    started = performance.now();
    upload.start();
  });
}

async function main() {
  let options;
  try {
    options = parseOptions();
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  try {
    const report = await upload(options);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    // An aborted upload keeps its file source and keep-alive socket open: exit explicitly.
    process.exit(0);
  } catch (err) {
    process.stderr.write(`tus-upload: ${err?.message ?? err}\n`);
    process.exit(1);
  }
}

main();
