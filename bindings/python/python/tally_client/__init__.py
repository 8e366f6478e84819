"""Pay for AI-model calls through a Tally metering proxy, and verify every receipt.

Every encoding and every check is the Rust ``tally-client`` crate's, compiled into this
package (``tally_client._native``); nothing is re-implemented in Python.

- :class:`Key`: key files, the same as ``tally keys`` writes (mode 0600).
- :class:`Channel`: one payer's channel to one host for one model. ``authorize(body)``
  gives the ``x-tally-authorization`` header for exactly those bytes; ``verify_json_answer``
  and ``verify_sse_answer`` check the receipt that comes back. Its ``seq`` and running total
  live in a durable state file locked against a second process.
- :mod:`tally_client.openai`: ``wrap(OpenAI(...), channel)`` authorises every request of the
  official client and verifies every answer before the application sees it.
- Auditor helpers: :func:`verify_receipt`, :func:`verify_receipts_jsonl`,
  :func:`verify_checkpoint`, :func:`verify_inclusion`.

Errors are :class:`TallyError` subclasses with a stable ``code``: :class:`ReceiptError`,
:class:`ChannelError`, :class:`KeyFileError`, :class:`DecodeError`, :class:`AuditError`.
"""

from ._native import (
    AUTHORIZATION_HEADER,
    ERROR_HEADER,
    RECEIPT_EVENT,
    RECEIPT_HEADER,
    AuditError,
    Channel,
    ChannelError,
    DecodeError,
    Key,
    KeyFileError,
    Receipt,
    ReceiptError,
    Schedule,
    TallyError,
    channel_id,
    decode_value,
    encode_value,
    log_origin,
    merkle_leaf_hash,
    merkle_root,
    meter,
    public_key_of_seed,
    verify_checkpoint,
    verify_consistency_proof,
    verify_inclusion,
    verify_inclusion_proof,
    verify_json_answer,
    verify_receipt,
    verify_receipts_jsonl,
    verify_sse_answer,
    verify_value,
)

__all__ = [
    "AUTHORIZATION_HEADER",
    "ERROR_HEADER",
    "RECEIPT_EVENT",
    "RECEIPT_HEADER",
    "AuditError",
    "Channel",
    "ChannelError",
    "DecodeError",
    "Key",
    "KeyFileError",
    "Receipt",
    "ReceiptError",
    "Schedule",
    "TallyError",
    "channel_id",
    "decode_value",
    "encode_value",
    "log_origin",
    "merkle_leaf_hash",
    "merkle_root",
    "meter",
    "public_key_of_seed",
    "verify_checkpoint",
    "verify_consistency_proof",
    "verify_inclusion",
    "verify_inclusion_proof",
    "verify_json_answer",
    "verify_receipt",
    "verify_receipts_jsonl",
    "verify_sse_answer",
    "verify_value",
]
