// @tally/client for Node (>= 20): the wasm module is loaded synchronously on import, key
// files are the ones `tally keys` writes (mode 0600), and a channel's state lives in a
// file written durably (temporary file, fsync, rename, fsync of the directory) and
// locked against a second process.
import { readFileSync, openSync, writeSync, fsyncSync, closeSync, renameSync, fstatSync,
  readSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { webcrypto } from 'node:crypto';
import { initSync } from './wasm/tally_client_js.js';
import * as wasm from './wasm/tally_client_js.js';
import { tallyError } from './errors.js';

initSync({ module: readFileSync(new URL('./wasm/tally_client_js_bg.wasm', import.meta.url)) });

export * from './wasm/tally_client_js.js';
export { tallyFetch, receiptOf } from './fetch.js';
export { tallyError } from './errors.js';
export { memoryStore } from './index.js';

/** Node needs no `init()`; it is here so browser code runs unchanged. */
export async function init() {}

const MAX_KEY_FILE_LEN = 65;
const MAX_STATE_LEN = 4096;

function syncDir(path) {
  const fd = openSync(dirname(path), 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function keyIo(op, path, e) {
  return tallyError('KeyFileError', e.code === 'EEXIST' ? 'exists' : 'io', `${op} ${path}: ${e.message}`);
}

/** Writes `key` to a new key file (mode 0600; never overwrites). */
export function saveKeyFile(path, key) {
  const text = key.keyFileText();
  let fd;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (e) {
    text.fill(0);
    throw keyIo('create', path, e);
  }
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(path);
    throw keyIo('write', path, e);
  } finally {
    text.fill(0);
  }
  closeSync(fd);
  syncDir(path);
}

/** A new random key in a new key file at `path`, as `tally keys new` makes it. */
export function generateKeyFile(path) {
  const seed = webcrypto.getRandomValues(new Uint8Array(32));
  const key = wasm.Key.fromSeed(seed);
  seed.fill(0);
  saveKeyFile(path, key);
  return key;
}

/** Loads a key file; refuses one that group or others may access. */
export function loadKeyFile(path) {
  let fd;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw keyIo('open', path, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw tallyError('KeyFileError', 'malformed', `key file ${path} is malformed: not a regular file`);
    const mode = st.mode & 0o777;
    if (mode & 0o077) {
      throw tallyError('KeyFileError', 'permissions',
        `key file ${path} has mode ${mode.toString(8).padStart(3, '0')}; it must not be accessible to group or others (chmod 600)`);
    }
    const buf = new Uint8Array(MAX_KEY_FILE_LEN + 1);
    const n = readSync(fd, buf, 0, buf.length, 0);
    try {
      return wasm.Key.fromKeyFileText(buf.subarray(0, n));
    } catch (e) {
      throw tallyError('KeyFileError', 'malformed', `key file ${path} is malformed: ${e.message}`);
    } finally {
      buf.fill(0);
    }
  } finally {
    closeSync(fd);
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/**
 * A channel state in a file. The lock is `<path>.node-lock`, holding this process's pid:
 * another live process holding it is a `ChannelError` (`channel_locked`); one left by a
 * dead process (`kill -9`) is taken over. `close()` releases it (it is also released when
 * the process exits normally).
 */
export class FileStore {
  constructor(path) {
    this.path = path;
    this.lockPath = `${path}.node-lock`;
    for (let attempt = 0; ; attempt++) {
      try {
        const fd = openSync(this.lockPath, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        fsyncSync(fd);
        closeSync(fd);
        break;
      } catch (e) {
        if (e.code !== 'EEXIST') throw tallyError('ChannelError', 'state_io', `lock ${this.lockPath}: ${e.message}`);
        let holder = NaN;
        try {
          holder = Number.parseInt(readFileSync(this.lockPath, 'utf8'), 10);
        } catch {
          // Removed meanwhile: try again.
        }
        if (Number.isInteger(holder) && holder > 0 && alive(holder) && holder !== process.pid || attempt > 2) {
          throw tallyError('ChannelError', 'channel_locked',
            `channel state ${path} is in use by another process (pid ${holder}, lock ${this.lockPath})`);
        }
        // A lock left by a process that died: take it over.
        try {
          unlinkSync(this.lockPath);
        } catch {
          // Another process took it over first; the next attempt sees its lock.
        }
      }
    }
    this.release = () => {
      try {
        if (readFileSync(this.lockPath, 'utf8') === String(process.pid)) unlinkSync(this.lockPath);
      } catch {
        // Already gone.
      }
    };
    process.once('exit', this.release);
  }

  load() {
    let text;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
    if (text.length > MAX_STATE_LEN) throw new Error(`${this.path} is longer than any channel state`);
    return text;
  }

  save(text) {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    syncDir(this.path);
  }

  close() {
    this.release();
    process.removeListener('exit', this.release);
  }
}

/** A new random key (not saved). */
export function generateKey() {
  const seed = webcrypto.getRandomValues(new Uint8Array(32));
  try {
    return wasm.Key.fromSeed(seed);
  } finally {
    seed.fill(0);
  }
}

/** Reads a `*.schedule.json` file. */
export function loadSchedule(path) {
  return wasm.Schedule.fromJson(readFileSync(path, 'utf8'));
}

/**
 * Opens a channel whose state is the file `state` (locked): `options` as for `Channel`
 * (`{chainId, contract, cap, maxFee?, ttlS?, lease?}`). `channel.close()` releases the lock.
 */
export function openChannel(key, host, schedule, options, state) {
  const store = new FileStore(state);
  let channel;
  try {
    channel = new wasm.Channel(key, host, schedule, options, store);
  } catch (e) {
    store.close();
    throw e;
  }
  channel.close = () => {
    channel.flush();
    store.close();
  };
  return channel;
}
