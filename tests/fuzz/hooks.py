"""A check of the API fuzzing test (tests/tests/api_fuzz.rs), loaded by
Schemathesis from SCHEMATHESIS_HOOKS.

tests/fuzz/schemathesis.toml lets the routes that move money answer 422 to
a request the document allows, because some refusals depend on what is
stored. This check keeps that allowance to those refusals: any other 422
to such a request fails the run.
"""

import schemathesis

# The refusals that depend on stored state, by code. `invalid_amount` is
# one only when the amount has more decimals than the wallet's currency
# (the document allows three, USD takes two); `wallet_not_found` only as a
# FAILED transfer (the wallet service refused it), which carries its id.
STATE_REFUSALS = {
    "insufficient_funds",
    "currency_mismatch",
    "same_wallet",
    "idempotency_key_reused",
    # A refund's: what the refunds stored so far left of the original, and
    # what the original is (a hold or a refund is not refunded).
    "exceeds_refundable",
    "not_refundable",
    # A capture's: what its hold holds and whether it names a receiver.
    "exceeds_hold",
    "receiver_required",
    # A hold's: its expiry, when it ran out before the wallet service
    # answered.
    "hold_expired",
}


@schemathesis.check
def refusals_of_valid_requests_depend_on_state(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json().get("error", {})
    code, message = error.get("code"), error.get("message", "")
    if code in STATE_REFUSALS:
        return None
    if code == "invalid_amount" and "decimal places" in message:
        return None
    if code == "wallet_not_found" and error.get("transfer_id"):
        return None
    # Metadata's bounds beyond the top level's, and its refusal of U+0000,
    # which the document states in words only (wallet_core::tags::Metadata).
    if code == "invalid_metadata" and any(
        bound in message for bound in ("nested", "levels deep", "bytes", "NUL")
    ):
        return None
    raise AssertionError(
        f"a request the document allows was refused 422 `{code}` ({message}), "
        "which does not depend on what is stored"
    )
