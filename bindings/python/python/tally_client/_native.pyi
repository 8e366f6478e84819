"""Type stubs of the native module (the Rust tally-client crate through PyO3)."""

from os import PathLike
from typing import Optional, Sequence, Tuple, List, Dict, Union

_Path = Union[str, PathLike]

AUTHORIZATION_HEADER: str
RECEIPT_HEADER: str
ERROR_HEADER: str
RECEIPT_EVENT: str

class TallyError(Exception):
    """Base of every tally_client error."""
    code: str

class ReceiptError(TallyError):
    """An answer's receipt is missing or does not check out. ``code``: ``no_receipt``,
    ``malformed_receipt``, ``request_digest``, ``response_digest``, ``usage_mismatch``,
    ``schedule_mismatch``, ``fee_mismatch``, ``authorization_mismatch``, or a receipt rule
    (``host_signature``, ``payer_signature``, ``expired``, …)."""

class ChannelError(TallyError):
    """``code``: ``channel_locked``, ``state_io``, ``state_malformed``,
    ``state_for_other_channel``, ``cap_reached``, ``invalid_config``, ``seq_exhausted``,
    ``closed``."""

class KeyFileError(TallyError):
    """``code``: ``exists``, ``permissions``, ``malformed``, ``io``, ``random``."""

class DecodeError(TallyError):
    """``code``: a decode code (``truncated``, ``wrong_tag``, …), ``bad_json``,
    ``unknown_type``, ``no_json_form``, ``not_signed``, ``bad_signature``, a receipt rule,
    ``bad_argument``."""

class AuditError(TallyError):
    """``code``: a receipt, checkpoint or Merkle proof code, ``unknown_schedule``."""

class Key:
    """An Ed25519 key, stored as ``tally keys`` stores it."""
    @staticmethod
    def generate(path: _Path) -> "Key":
        """A new random key in a new key file (mode 0600; never overwrites)."""
    @staticmethod
    def load(path: _Path) -> "Key":
        """Loads a key file (refused if group or others may access it)."""
    @staticmethod
    def from_seed(seed: bytes) -> "Key":
        """The key of a 32-byte seed."""
    def save(self, path: _Path) -> None:
        """Writes the key to a new key file (mode 0600; never overwrites)."""
    @property
    def public_key(self) -> str:
        """64 lowercase hex digits."""

class Schedule:
    """A model's registered price schedule."""
    @staticmethod
    def from_json(text: str) -> "Schedule": ...
    @staticmethod
    def load(path: _Path) -> "Schedule":
        """Reads a ``*.schedule.json`` file."""
    @property
    def hash(self) -> str: ...
    @property
    def model(self) -> str: ...
    def json(self) -> str: ...

class Receipt:
    """A host's signed receipt for one call."""
    @staticmethod
    def from_hex(text: str) -> "Receipt": ...
    @staticmethod
    def from_bytes(data: bytes) -> "Receipt": ...
    @staticmethod
    def from_json(text: str) -> "Receipt": ...
    id: str
    seq: int
    fee: int
    units: int
    channel_total: int
    max_fee: int
    host_seq: int
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    finish: str
    payer: str
    host: str
    model: str
    schedule: str
    guest: str
    channel: str
    request_digest: str
    response_digest: str
    timestamp_ms: int
    canonical: bytes
    def hex(self) -> str: ...
    def json(self) -> str: ...

class Channel:
    """A payer's channel to one host for one model."""
    def __init__(
        self,
        key: Key,
        host: str,
        schedule: Schedule,
        *,
        chain_id: str,
        contract: str,
        cap: int,
        max_fee: Optional[int] = None,
        state: Optional[_Path] = None,
        ttl_s: int = 900,
        lease: int = 32,
    ) -> None: ...
    def authorize(self, request_body: bytes) -> str:
        """The ``x-tally-authorization`` header value for exactly these body bytes."""
    def verify_json_answer(
        self,
        request_body: bytes,
        receipt_header: Optional[str],
        response_body: bytes,
        authorization: Optional[str] = None,
    ) -> Receipt: ...
    def verify_sse_answer(
        self, request_body: bytes, stream: bytes, authorization: Optional[str] = None
    ) -> Receipt: ...
    @property
    def status(self) -> Dict[str, int]: ...
    @property
    def payer(self) -> str: ...
    @property
    def channel_id(self) -> str: ...
    @property
    def schedule(self) -> Schedule: ...
    @property
    def last_receipt(self) -> Optional[Receipt]: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Channel": ...
    def __exit__(self, *args: object) -> bool: ...

class TestHost:
    """A stand-in host for tests and benches."""
    def __init__(self, seed: bytes, guest: str) -> None: ...
    def receipt_json(
        self, authorization: str, schedule: Schedule, request_body: bytes, response_body: bytes
    ) -> str: ...

def verify_json_answer(
    request_body: bytes, receipt_header: Optional[str], response_body: bytes, schedule: Schedule
) -> Receipt: ...
def verify_sse_answer(request_body: bytes, stream: bytes, schedule: Schedule) -> Receipt: ...
def verify_receipt(receipt: Receipt, schedules: Sequence[Schedule] = ...) -> None: ...
def verify_receipts_jsonl(
    text: str, schedules: Sequence[Schedule] = ...
) -> List[Tuple[int, Optional[Receipt], Optional[str], Optional[str]]]: ...
def verify_checkpoint(note: str, origin: str, aggregator: str) -> Tuple[int, str]: ...
def verify_inclusion(
    receipt: Receipt, leaf_index: int, hashes: Sequence[str], note: str, origin: str, aggregator: str
) -> Tuple[int, str]: ...
def verify_inclusion_proof(
    leaf: str, leaf_index: int, tree_size: int, hashes: Sequence[str], root: str
) -> None: ...
def verify_consistency_proof(
    size1: int, size2: int, hashes: Sequence[str], root1: str, root2: str
) -> None: ...
def merkle_leaf_hash(data: bytes) -> str: ...
def merkle_root(leaves: Sequence[str]) -> str: ...
def log_origin(chain_id: str, contract: str) -> str: ...
def channel_id(payer: str, host: str, model: str) -> str: ...
def decode_value(ty: str, data: bytes) -> Tuple[bytes, Optional[str]]: ...
def encode_value(ty: str, json: str) -> bytes: ...
def verify_value(ty: str, data: bytes) -> None: ...
def meter(input: bytes) -> bytes: ...
def public_key_of_seed(seed: bytes) -> str: ...
def rust_bench(iterations: int) -> Tuple[float, float]: ...
def bench_fixture() -> Tuple[bytes, bytes, Schedule, Channel, bytes]: ...
