// Test support: the repository root (TALLY_ROOT), the golden vectors, and the real
// `tally proxy` in front of the test upstream (bindings/testkit/serve.py).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = process.env.TALLY_ROOT ?? join(import.meta.dirname, '..', '..', '..');
export const PYTHON = process.env.TALLY_PYTHON ?? 'python3';

export function vectors() {
  return JSON.parse(readFileSync(join(ROOT, 'testdata', 'vectors.json'), 'utf8'));
}

export function unhex(s) {
  return Uint8Array.from(Buffer.from(s, 'hex'));
}

export function tempDir(name) {
  return mkdtempSync(join(tmpdir(), `tally-js-${name}-`));
}

/** Starts serve.py; resolves to its env.json plus `dir` and `stop()`. */
export async function startProxy() {
  const dir = tempDir('proxy');
  const child = spawn(PYTHON, [join(ROOT, 'bindings', 'testkit', 'serve.py'), dir], { stdio: 'inherit' });
  const envPath = join(dir, 'env.json');
  const deadline = Date.now() + 300_000;
  while (!existsSync(envPath)) {
    if (child.exitCode !== null) throw new Error(`serve.py exited with ${child.exitCode}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('the proxy was not ready in 300 s');
    }
    await sleep(100);
  }
  const env = JSON.parse(readFileSync(envPath, 'utf8'));
  env.dir = dir;
  env.stop = async () => {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  };
  return env;
}
