// @tally/client for browsers (and any ES module host): call `await init()` once (it
// fetches the .wasm beside this file), then use the classes and functions below. Channel
// state goes to a store you choose: `localStorageStore(name)`, `memoryStore()`, or any
// `{load(): string | null, save(text: string): void}` whose `save` is durable.
import init, * as wasm from './wasm/tally_client_js.js';

export * from './wasm/tally_client_js.js';
export { init };
export { tallyFetch, receiptOf } from './fetch.js';
export { tallyError } from './errors.js';

/** A store kept in memory only (not durable: a reload would reuse `seq`s). */
export function memoryStore() {
  let state = null;
  return { load: () => state, save: (text) => { state = text; } };
}

/** A store in `localStorage` under `name` (synchronous; survives reloads). */
export function localStorageStore(name) {
  return {
    load: () => globalThis.localStorage.getItem(name),
    save: (text) => globalThis.localStorage.setItem(name, text),
  };
}

/** A new random key (WebCrypto). */
export function generateKey() {
  const seed = globalThis.crypto.getRandomValues(new Uint8Array(32));
  try {
    return wasm.Key.fromSeed(seed);
  } finally {
    seed.fill(0);
  }
}
