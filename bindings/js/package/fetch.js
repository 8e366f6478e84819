// A `fetch` that pays through a Tally channel: pass it as the `fetch` option of the
// official `openai` client. Every metered request (POST .../chat/completions,
// .../completions, .../embeddings, .../responses) is authorised with
// `channel.authorize(body)`; every successful answer, JSON or streamed, is read to its end
// and verified (signatures, exact bytes, usage, the fee re-metered, the authorisation)
// before the caller reads any of it.
//
// A failed check never reaches the application as data: the answer is replaced by a 502
// in the OpenAI error shape, `{"error": {"message", "type": "tally_receipt_error", "code"}}`
// with `x-tally-error: <code>` and `x-should-retry: false`, so the openai client throws
// its `APIError` (`e.status === 502`, `e.code` the receipt code) and does not retry (a
// retry would pay again). A channel that cannot authorise (`cap_reached`, a store error)
// answers 402 / 500 the same way (type `tally_channel_error`). Pass `{throwErrors: true}`
// to get the `ReceiptError` / `ChannelError` thrown instead.
import { wireNames } from './wasm/tally_client_js.js';

const METERED = ['/chat/completions', '/completions', '/embeddings', '/responses'];
const RECEIPTS = new WeakMap();

function isMetered(method, url) {
  if (method.toUpperCase() !== 'POST') return false;
  const path = new URL(url).pathname.replace(/\/+$/, '').toLowerCase();
  return METERED.some((route) => path.endsWith(route));
}

function failure(status, type, error) {
  const code = error.code ?? 'tally_error';
  return new Response(JSON.stringify({ error: { message: String(error.message), type, code } }), {
    status,
    headers: { 'content-type': 'application/json', 'x-tally-error': code, 'x-should-retry': 'false' },
  });
}

/**
 * The verified receipt of a response returned by a `tallyFetch` (or `undefined`).
 */
export function receiptOf(response) {
  return RECEIPTS.get(response);
}

/**
 * A fetch paying through `channel`. Options: `fetch` (the one that sends, default
 * `globalThis.fetch`), `onReceipt(receipt)` (called with every verified receipt),
 * `throwErrors` (throw instead of answering with an error response).
 */
export function tallyFetch(channel, options = {}) {
  const send = options.fetch ?? globalThis.fetch;
  const names = wireNames();
  return async function fetchWithTally(input, init) {
    const request = new Request(input, init);
    if (!isMetered(request.method, request.url)) return send(input, init);
    const body = new Uint8Array(await request.arrayBuffer());
    let header;
    try {
      header = channel.authorize(body);
    } catch (e) {
      if (options.throwErrors || e?.name !== 'ChannelError') throw e;
      return failure(e.code === 'cap_reached' ? 402 : 500, 'tally_channel_error', e);
    }
    const headers = new Headers(request.headers);
    headers.set(names.authorization, header);
    // The receipt covers the bytes on the wire: ask for them uncompressed.
    headers.set('accept-encoding', 'identity');
    const response = await send(request.url, {
      method: request.method,
      headers,
      body,
      signal: request.signal,
    });
    if (!response.ok) return response;
    const raw = new Uint8Array(await response.arrayBuffer());
    let receipt;
    try {
      const type = response.headers.get('content-type') ?? '';
      receipt = type.toLowerCase().startsWith('text/event-stream')
        ? channel.verifySseAnswer(body, raw, header)
        : channel.verifyJsonAnswer(body, response.headers.get(names.receipt) ?? undefined, raw, header);
    } catch (e) {
      if (options.throwErrors || e?.name !== 'ReceiptError') throw e;
      return failure(502, 'tally_receipt_error', e);
    }
    options.onReceipt?.(receipt);
    const out = new Response(raw, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
    RECEIPTS.set(out, receipt);
    return out;
  };
}
