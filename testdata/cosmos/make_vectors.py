"""Golden vectors for `tally_aggregator::chain::cosmos`, produced by an independent
implementation: cosmpy (PyPI `cosmpy==0.12.2`, Fetch.ai's Cosmos SDK client).

The Rust test (`aggregator/tests/aggregator/chain.rs`, `cosmos_tx_matches_the_cosmpy_vectors`) reads
`vectors.json` only; CI never runs this script. To regenerate:

    python3 -m venv /tmp/v && /tmp/v/bin/pip install cosmpy==0.12.2
    /tmp/v/bin/python testdata/cosmos/make_vectors.py > testdata/cosmos/vectors.json

Each case signs one MsgExecuteContract in SIGN_MODE_DIRECT with a fixed secp256k1 key
(RFC 6979 deterministic, low-S), so the signature and the TxRaw bytes are exact.
"""

import base64
import hashlib
import json

from cosmpy.aerial.tx import SigningCfg, Transaction, TxFee
from cosmpy.crypto.address import Address
from cosmpy.crypto.keypairs import PrivateKey
from cosmpy.protos.cosmos.base.v1beta1.coin_pb2 import Coin
from cosmpy.protos.cosmwasm.wasm.v1.tx_pb2 import MsgExecuteContract
from cosmpy.protos.cosmos.tx.v1beta1.tx_pb2 import SignDoc

CONTRACT = "tally14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr"

CASES = [
    {
        "name": "deposit_with_funds_and_memo",
        "secret": "01" * 32,
        "prefix": "tally",
        "chain_id": "tally-test-1",
        "account_number": 42,
        "sequence": 7,
        # serde_json's compact encoding of ExecuteMsg::Deposit { payer_key: [7; 32] }.
        "msg": '{"deposit":{"payer_key":"%s"}}' % base64.b64encode(bytes([7] * 32)).decode(),
        "funds": 1234,
        "denom": "utally",
        "fee": 5000,
        "gas_limit": 200000,
        "memo": "tally settlement",
    },
    {
        "name": "finalize_no_funds_neutron_prefix",
        "secret": "a5" * 32,
        "prefix": "neutron",
        "chain_id": "pion-1",
        "account_number": 0,
        "sequence": 0,
        "msg": '{"finalize":{}}',
        "funds": 0,
        "denom": "untrn",
        "fee": 1,
        "gas_limit": 1500000,
        "memo": "",
    },
]


def case(c):
    key = PrivateKey(bytes.fromhex(c["secret"]))
    sender = Address(key.public_key, prefix=c["prefix"])
    msg = MsgExecuteContract(
        sender=str(sender), contract=CONTRACT, msg=c["msg"].encode()
    )
    if c["funds"]:
        msg.funds.extend([Coin(denom=c["denom"], amount=str(c["funds"]))])
    tx = Transaction()
    tx.add_message(msg)
    fee = TxFee(amount=f'{c["fee"]}{c["denom"]}', gas_limit=c["gas_limit"])
    tx.seal(SigningCfg.direct(key.public_key, c["sequence"]), fee=fee, memo=c["memo"])
    tx.sign(key, c["chain_id"], c["account_number"], deterministic=True)
    tx.complete()
    sd = SignDoc(
        body_bytes=tx.tx.body.SerializeToString(),
        auth_info_bytes=tx.tx.auth_info.SerializeToString(),
        chain_id=c["chain_id"],
        account_number=c["account_number"],
    ).SerializeToString()
    out = dict(c)
    out["contract"] = CONTRACT
    out["address"] = str(sender)
    out["public_key"] = key.public_key.public_key_bytes.hex()
    out["sign_doc"] = sd.hex()
    out["sign_doc_sha256"] = hashlib.sha256(sd).hexdigest()
    out["signature"] = tx.tx.signatures[0].hex()
    out["tx_bytes"] = tx.tx.SerializeToString().hex()
    return out


print(json.dumps({"generator": "cosmpy 0.12.2", "cases": [case(c) for c in CASES]}, indent=2))
