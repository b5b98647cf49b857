"""prorata through a client we did not write: grpcio + stubs generated from proto/.

Every test uses its own order id; the rule set and the promoter network are set up once
per session (the `world` fixture). The stubs come from conftest.py's session start.
"""

from decimal import Decimal
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prorata.v1 import (
    commission_pb2,
    commission_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    rules_pb2,
    rules_pb2_grpc,
    types_pb2,
)

# The rule set and network of conformance vector core/02-three-levels-with-fee.yaml.
RULESET_YAML = """\
payment_fee:
  by_channel:
    alipay: '0.006'
platform:
  rate: '0.05'
rules:
- id: beauty
  when:
    category: [beauty]
  levels: ['0.15', '0.08', '0.03']
"""

EXPECTED_TOTALS = {
    "merchant:M1": "136.80",
    "platform": "10.00",
    "channel:alipay": "1.20",
    "promoter:P3": "30.00",
    "promoter:P2": "16.00",
    "promoter:P1": "6.00",
}

REPLAYED = "prorata-replayed"


# --- helpers -----------------------------------------------------------------------------


def ts(rfc3339):
    t = Timestamp()
    t.FromJsonString(rfc3339)
    return t


def decimal(s):
    return types_pb2.Money(decimal=s)


def minor(n):
    return types_pb2.Money(minor=n)


def serum_order(order_id, unit_price=None, quantity=2, paid_at="2026-11-01T10:00:00Z"):
    """The order of vector 02 under another id: 2 x SERUM-50 at 100.00, paid by alipay."""
    return types_pb2.Order(
        id=order_id,
        merchant="M1",
        buyer="C1",
        channel="alipay",
        paid_at=ts(paid_at),
        currency="CNY",
        lines=[
            types_pb2.OrderLine(
                id="L1",
                sku="SERUM-50",
                category="beauty",
                quantity=quantity,
                unit_price=unit_price if unit_price is not None else decimal("100.00"),
            )
        ],
    )


def compute(api, order):
    """Compute -> (split, value of the prorata-replayed response header)."""
    response, call = api.commission.Compute.with_call(
        commission_pb2.ComputeRequest(order=order), timeout=10
    )
    headers = dict(call.initial_metadata())
    assert REPLAYED in headers, f"no {REPLAYED} header; got {headers}"
    return response.split, headers[REPLAYED]


def get_split(api, order_id):
    return api.commission.GetSplit(
        commission_pb2.GetSplitRequest(order_id=order_id), timeout=10
    ).split


def rpc_error(call, *args):
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=10)
    return caught.value


def totals(split):
    return {t.account: t.amount for t in split.totals}


def assert_internally_consistent(split):
    """Every line's shares sum to its paid_minor; decimals render the minor amounts."""
    exp = split.currency_exponent
    for line in split.lines:
        assert sum(s.amount_minor for s in line.shares) == line.paid_minor, line.line_id
        for share in line.shares:
            assert Decimal(share.amount).scaleb(exp) == share.amount_minor, share
    assert sum(line.paid_minor for line in split.lines) == split.paid_minor
    assert sum(t.amount_minor for t in split.totals) == split.paid_minor
    for t in split.totals:
        assert Decimal(t.amount).scaleb(exp) == t.amount_minor, t


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def api(channel):
    return SimpleNamespace(
        commission=commission_pb2_grpc.CommissionServiceStub(channel),
        rules=rules_pb2_grpc.RuleServiceStub(channel),
        network=network_pb2_grpc.NetworkServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
    )


@pytest.fixture(scope="session")
def world(api):
    """Publishes the rule set; P1 <- P2 <- P3, customer C1 bound to P3. -> rule-set version."""
    published = api.rules.PublishRuleSet(
        rules_pb2.PublishRuleSetRequest(document=RULESET_YAML), timeout=10
    )
    assert published.ruleset.version >= 1
    for promoter, parent in (("P1", None), ("P2", "P1"), ("P3", "P2")):
        request = network_pb2.UpsertPromoterRequest(id=promoter)
        if parent is not None:
            request.parent = parent
        api.network.UpsertPromoter(request, timeout=10)
    api.network.BindCustomer(
        network_pb2.BindCustomerRequest(customer="C1", promoter="P3"), timeout=10
    )
    return SimpleNamespace(ruleset_version=published.ruleset.version)


# --- tests -------------------------------------------------------------------------------


def test_health_reports_serving(api):
    for service in ("", "prorata.v1.CommissionService"):
        reply = api.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_a_split_is_computed_to_the_cent(api, world):
    split, replayed = compute(api, serum_order("O-2001"))

    assert replayed == "false"
    assert totals(split) == EXPECTED_TOTALS
    assert split.order_id == "O-2001"
    assert (split.merchant, split.buyer, split.currency) == ("M1", "C1", "CNY")
    assert split.currency_exponent == 2
    assert split.paid_minor == 20000
    assert split.ruleset_version == world.ruleset_version
    assert [line.line_id for line in split.lines] == ["L1"]
    assert [(c.level, c.promoter) for c in split.chain] == [(1, "P3"), (2, "P2"), (3, "P1")]
    assert split.fingerprint
    assert_internally_consistent(split)


def test_a_replay_returns_the_same_bytes_and_says_so(api, world):
    first, first_replayed = compute(api, serum_order("O-PY-REPLAY"))
    second, second_replayed = compute(api, serum_order("O-PY-REPLAY"))

    assert first_replayed == "false"
    assert second_replayed == "true"
    assert second.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True
    )
    assert second.SerializeToString() == first.SerializeToString()


def test_the_same_id_with_other_content_is_already_exists(api, world):
    original, _ = compute(api, serum_order("O-PY-CONFLICT", quantity=2))

    err = rpc_error(
        api.commission.Compute,
        commission_pb2.ComputeRequest(order=serum_order("O-PY-CONFLICT", quantity=3)),
    )

    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    # The stored split is untouched.
    assert get_split(api, "O-PY-CONFLICT") == original


def test_a_stored_split_reads_back(api, world):
    computed, _ = compute(api, serum_order("O-PY-READBACK"))

    stored = get_split(api, "O-PY-READBACK")

    assert stored == computed
    assert stored.SerializeToString() == computed.SerializeToString()
    assert totals(stored) == EXPECTED_TOTALS


def test_list_splits_finds_it_for_the_promoter(api, world):
    paid_at = "2026-11-05T08:00:00Z"  # no other test pays at this instant
    compute(api, serum_order("O-PY-LISTED", paid_at=paid_at))

    # Exactly this order in a one-second window.
    window = api.commission.ListSplits(
        commission_pb2.ListSplitsRequest(
            account="promoter:P3", **{"from": ts(paid_at)}, to=ts("2026-11-05T08:00:01Z")
        ),
        timeout=10,
    )
    assert [s.order_id for s in window.splits] == ["O-PY-LISTED"]
    summary = window.splits[0]
    assert summary.paid_at == ts(paid_at)
    assert (summary.currency, summary.amount_minor, summary.amount) == ("CNY", 3000, "30.00")
    assert summary.ruleset_version == world.ruleset_version
    assert window.next_page_token == ""

    # And on some page of the unbounded listing, newest first.
    seen, token = [], ""
    for _ in range(1000):
        page = api.commission.ListSplits(
            commission_pb2.ListSplitsRequest(account="promoter:P3", page_size=1, page_token=token),
            timeout=10,
        )
        assert len(page.splits) <= 1
        seen.extend(page.splits)
        token = page.next_page_token
        if not token:
            break
    assert "O-PY-LISTED" in [s.order_id for s in seen]
    instants = [s.paid_at.ToNanoseconds() for s in seen]
    assert instants == sorted(instants, reverse=True)
    assert len({s.order_id for s in seen}) == len(seen), "a split listed twice"


def test_bad_input_names_the_field(api, world):
    zero_quantity = serum_order("O-PY-BAD", quantity=0)
    err = rpc_error(api.commission.Compute, commission_pb2.ComputeRequest(order=zero_quantity))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith("order.lines[0].quantity"), err.details()

    too_precise = serum_order("O-PY-BAD", unit_price=decimal("10.001"))
    err = rpc_error(api.commission.Compute, commission_pb2.ComputeRequest(order=too_precise))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith("order.lines[0].unit_price"), err.details()

    # Refused input leaves nothing behind: the id is still free for a valid order.
    err = rpc_error(api.commission.GetSplit, commission_pb2.GetSplitRequest(order_id="O-PY-BAD"))
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    split, replayed = compute(api, serum_order("O-PY-BAD"))
    assert replayed == "false"
    assert totals(split) == EXPECTED_TOTALS


def test_minor_and_decimal_money_forms_are_the_same_order(api, world):
    first, first_replayed = compute(api, serum_order("O-PY-FORMS", unit_price=minor(10000)))
    again, again_replayed = compute(api, serum_order("O-PY-FORMS", unit_price=decimal("100.00")))

    assert first_replayed == "false"
    assert again_replayed == "true"
    assert again.SerializeToString() == first.SerializeToString()
    assert totals(first) == EXPECTED_TOTALS


def test_unknown_order_is_not_found(api, world):
    err = rpc_error(
        api.commission.GetSplit, commission_pb2.GetSplitRequest(order_id="O-PY-NEVER-COMPUTED")
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
