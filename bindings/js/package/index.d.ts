// Types of @tally/client. The wasm module's classes and functions (Key, Schedule, Receipt,
// Channel, verifyJsonAnswer, …) are declared by wasm-bindgen in wasm/tally_client_js.d.ts.
import type { Channel, Key, Receipt, Schedule } from './wasm/tally_client_js.js';

export * from './wasm/tally_client_js.js';

/** Where a channel keeps its state; `save` must make `text` durable before returning. */
export interface StateStore {
  load(): string | null | undefined;
  save(text: string): void;
}

/** `new Channel(key, host, schedule, options, store)`'s options. */
export interface ChannelOptions {
  chainId: string;
  contract: string;
  /** The most the channel may ever cost (every authorisation's cumulative cap). */
  cap: bigint | string;
  /** The most one call may cost (default: the cap). */
  maxFee?: bigint | string;
  /** Authorisation lifetime in seconds (default 900). */
  ttlS?: number;
  /** `seq`s reserved per durable state write (default 32). */
  lease?: number;
}

/** An error of this package: `name` is ReceiptError, ChannelError, KeyFileError, DecodeError or AuditError. */
export interface TallyError extends Error {
  code: string;
}

export interface TallyFetchOptions {
  /** The fetch that sends (default `globalThis.fetch`). */
  fetch?: typeof fetch;
  /** Called with every verified receipt. */
  onReceipt?: (receipt: Receipt) => void;
  /** Throw ReceiptError / ChannelError instead of answering with an error response. */
  throwErrors?: boolean;
}

/** A fetch paying through `channel`, for the `fetch` option of the openai client. */
export function tallyFetch(channel: Channel, options?: TallyFetchOptions): typeof fetch;
/** The verified receipt of a response of `tallyFetch`. */
export function receiptOf(response: Response): Receipt | undefined;
export function memoryStore(): StateStore;
/** Browsers: a store in localStorage. */
export function localStorageStore(name: string): StateStore;
export function generateKey(): Key;
export function tallyError(name: string, code: string, message: string): TallyError;
/** Browsers: loads the .wasm (Node loads it on import). */
export function init(): Promise<unknown>;

// Node only.
export class FileStore implements StateStore {
  constructor(path: string);
  load(): string | null;
  save(text: string): void;
  close(): void;
}
export function generateKeyFile(path: string): Key;
export function saveKeyFile(path: string, key: Key): void;
export function loadKeyFile(path: string): Key;
export function loadSchedule(path: string): Schedule;
export function openChannel(
  key: Key,
  host: string,
  schedule: Schedule,
  options: ChannelOptions,
  state: string,
): Channel & { close(): void };
