"""After the sale, through grpcio: refunds, prepaid cards, balances, payouts, reconciliation.

The amounts are those of the conformance vectors tests/vectors/lifecycle/01-partial-refunds.yaml
and 02-prepaid-card.yaml (PRODUCT.md §5-§7), reproduced under other ids so that this module
shares nothing with test_client.py:

- Each scenario has its own merchant and a *canary* rule set limited to that merchant, so the
  rule set test_client.py publishes for M1 never applies here and ours never applies there.
  The canaries carry an `effective_from` in the past (before every paid_at used here): a
  version with an effective_from is preferred over one without, so a rule set published
  without one later in the session (whatever the test order) cannot take these merchants
  over either.
- The promoters and customers are ours (LC-*, and one fresh network per balance test), and
  every order, refund, redemption and payout batch id is unique to its test.
- CreatePayout gathers every account's available balance, other tests' included: the
  assertions look at this test's own accounts only.
"""

from types import SimpleNamespace

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from prorata.v1 import (
    commission_pb2,
    commission_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    rules_pb2,
    rules_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    types_pb2,
)

REPLAYED = "prorata-replayed"
EFFECTIVE_FROM = "2026-01-01T00:00:00Z"  # before every paid_at below

M_REFUND = "M-LC-REF"
M_CARD = "M-LC-SPA"
M_BALANCE = "M-LC-BAL"

# Vector 01's rule set, limited to M_REFUND.
REFUND_RULESET = f"""\
effective_from: {EFFECTIVE_FROM}
canary: {{merchants: [{M_REFUND}]}}
payment_fee:
  default: '0.006'
platform:
  rate: '0.05'
rules:
- id: all
  levels: ['0.10', '0.05']
"""

# Vector 02's rule set, limited to M_CARD.
CARD_RULESET = f"""\
effective_from: {EFFECTIVE_FROM}
canary: {{merchants: [{M_CARD}]}}
platform:
  rate: '0.05'
rules:
- id: all
  levels: ['0.10', '0.05']
"""

# No hold: a share is available from the order's paid_at (in the past) on.
BALANCE_RULESET = f"""\
effective_from: {EFFECTIVE_FROM}
canary: {{merchants: [{M_BALANCE}]}}
hold_days: 0
platform:
  rate: '0.05'
rules:
- id: all
  levels: ['0.10']
"""

# The vectors' network P1 <- P2, customer C1 bound to P2, under our own ids.
P1, P2, C1 = "LC-P1", "LC-P2", "LC-C1"


# --- helpers -----------------------------------------------------------------------------


def ts(rfc3339):
    t = Timestamp()
    t.FromJsonString(rfc3339)
    return t


def decimal(s):
    return types_pb2.Money(decimal=s)


def line(line_id, sku, category, unit_price, quantity=1, uses=0):
    return types_pb2.OrderLine(
        id=line_id,
        sku=sku,
        category=category,
        quantity=quantity,
        unit_price=decimal(unit_price),
        uses=uses,
    )


def order(order_id, merchant, buyer, lines, paid_at="2026-11-01T10:00:00Z"):
    return types_pb2.Order(
        id=order_id,
        merchant=merchant,
        buyer=buyer,
        paid_at=ts(paid_at),
        currency="CNY",
        lines=lines,
    )


def rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    return caught.value


def replayed_header(call):
    headers = dict(call.initial_metadata())
    assert REPLAYED in headers, f"no {REPLAYED} header; got {headers}"
    return headers[REPLAYED]


def accounts(totals):
    """{account: decimal amount} of the non-zero totals (an account not listed is zero)."""
    return {t.account: t.amount for t in totals if t.amount_minor != 0}


def minor_by_account(totals):
    return {t.account: t.amount_minor for t in totals}


def assert_movement_consistent(movement, order_id, movement_id):
    """Per line, the shares sum to the line's amount; the totals are the per-account sums."""
    assert (movement.id, movement.order_id) == (movement_id, order_id)
    assert (movement.currency, movement.currency_exponent) == ("CNY", 2)
    by_account = {}
    for ln in movement.lines:
        assert sum(s.amount_minor for s in ln.shares) == ln.paid_minor, ln.line_id
        for s in ln.shares:
            assert s.amount_minor >= 0, s
            by_account[s.account] = by_account.get(s.account, 0) + s.amount_minor
    assert {a: m for a, m in by_account.items() if m} == {
        a: m for a, m in minor_by_account(movement.totals).items() if m
    }


def compute(lc, o):
    return lc.commission.Compute(commission_pb2.ComputeRequest(order=o), timeout=10).split


def refund(lc, order_id, refund_id, lines=None, full=False):
    """Refund -> (reversal movement, value of the prorata-replayed header).

    `lines` maps a line id to a decimal amount, or to {"uses": k} for a card line."""
    request = settlement_pb2.RefundRequest(order_id=order_id, refund_id=refund_id, full=full)
    for line_id, what in (lines or {}).items():
        if isinstance(what, dict):
            request.lines.add(line_id=line_id, uses=what["uses"])
        else:
            request.lines.add(line_id=line_id, amount=decimal(what))
    response, call = lc.settlement.Refund.with_call(request, timeout=10)
    return response.reversal, replayed_header(call)


def refund_request(order_id, refund_id, lines=None, full=False):
    request = settlement_pb2.RefundRequest(order_id=order_id, refund_id=refund_id, full=full)
    for line_id, amount in (lines or {}).items():
        request.lines.add(line_id=line_id, amount=decimal(amount))
    return request


def redeem_request(order_id, line_id, redemption_id, uses):
    return settlement_pb2.RedeemRequest(
        order_id=order_id, line_id=line_id, redemption_id=redemption_id, uses=uses
    )


def redeem(lc, order_id, line_id, redemption_id, uses):
    """Redeem -> (redemption movement, value of the prorata-replayed header)."""
    response, call = lc.settlement.Redeem.with_call(
        redeem_request(order_id, line_id, redemption_id, uses), timeout=10
    )
    return response.redemption, replayed_header(call)


def balance(lc, account):
    """The account's CNY balance (all zero when it has none)."""
    reply = lc.settlement.GetBalance(settlement_pb2.GetBalanceRequest(account=account), timeout=10)
    assert reply.account == account
    found = [b for b in reply.balances if b.currency == "CNY"]
    assert len(found) <= 1, reply
    return found[0] if found else settlement_pb2.Balance(currency="CNY")


def amounts(b):
    return dict(
        deferred=b.deferred_minor,
        pending=b.pending_minor,
        available=b.available_minor,
        in_payout=b.in_payout_minor,
        paid=b.paid_minor,
        debt=b.debt_minor,
    )


def entries(lc, account):
    """Every entry of the account, oldest first, across pages."""
    out, token = [], ""
    for _ in range(1000):
        page = lc.settlement.ListEntries(
            settlement_pb2.ListEntriesRequest(account=account, page_token=token), timeout=10
        )
        out.extend(page.entries)
        token = page.next_page_token
        if not token:
            return out
    raise AssertionError("ListEntries never ended")


def own_instructions(batch, account):
    return [i for i in batch.instructions if i.account == account]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lc(channel):
    """Stubs, our network and the three canary rule sets (-> their versions)."""
    stubs = SimpleNamespace(
        commission=commission_pb2_grpc.CommissionServiceStub(channel),
        rules=rules_pb2_grpc.RuleServiceStub(channel),
        network=network_pb2_grpc.NetworkServiceStub(channel),
        settlement=settlement_pb2_grpc.SettlementServiceStub(channel),
    )
    stubs.network.UpsertPromoter(network_pb2.UpsertPromoterRequest(id=P1), timeout=10)
    stubs.network.UpsertPromoter(network_pb2.UpsertPromoterRequest(id=P2, parent=P1), timeout=10)
    stubs.network.BindCustomer(network_pb2.BindCustomerRequest(customer=C1, promoter=P2), timeout=10)
    versions = {}
    for merchant, document in (
        (M_REFUND, REFUND_RULESET),
        (M_CARD, CARD_RULESET),
        (M_BALANCE, BALANCE_RULESET),
    ):
        published = stubs.rules.PublishRuleSet(
            rules_pb2.PublishRuleSetRequest(document=document), timeout=10
        )
        assert list(published.ruleset.canary_merchants) == [merchant]
        versions[merchant] = published.ruleset.version
    stubs.versions = versions
    return stubs


def pay_refund_order(lc, order_id):
    """Vector 01's order O-8001 under another id and merchant; checks its split."""
    split = compute(
        lc,
        order(
            order_id,
            M_REFUND,
            C1,
            [line("L1", "A", "misc", "99.99"), line("L2", "B", "misc", "10.00")],
        ),
    )
    assert split.ruleset_version == lc.versions[M_REFUND], "the canary rule set did not apply"
    assert accounts(split.totals) == {
        f"merchant:{M_REFUND}": "87.37",
        "platform": "5.49",
        "channel:default": "0.65",
        f"promoter:{P2}": "10.99",
        f"promoter:{P1}": "5.49",
    }
    return split


def pay_card_order(lc, order_id):
    """Vector 02's order O-9001 under another id and merchant; checks its split."""
    split = compute(
        lc, order(order_id, M_CARD, C1, [line("L1", "CARD-10", "service", "999.00", uses=10)])
    )
    assert split.ruleset_version == lc.versions[M_CARD], "the canary rule set did not apply"
    assert accounts(split.totals) == {
        f"merchant:{M_CARD}": "799.20",
        "platform": "49.95",
        f"promoter:{P2}": "99.90",
        f"promoter:{P1}": "49.95",
    }
    return split


# Vector 01's expected reversals, under our account names.
R1 = {
    f"merchant:{M_REFUND}": "26.48",
    "platform": "1.66",
    "channel:default": "0.20",
    f"promoter:{P2}": "3.33",
    f"promoter:{P1}": "1.66",
}
R2 = {
    f"merchant:{M_REFUND}": "7.95",
    "platform": "0.50",
    "channel:default": "0.06",
    f"promoter:{P2}": "1.00",
    f"promoter:{P1}": "0.50",
}
R4 = {
    f"merchant:{M_REFUND}": "52.94",
    "platform": "3.33",
    "channel:default": "0.39",
    f"promoter:{P2}": "6.66",
    f"promoter:{P1}": "3.33",
}


# --- refunds (vector 01) -----------------------------------------------------------------


def test_a_partial_refund_takes_back_each_accounts_share_to_the_cent(lc):
    pay_refund_order(lc, "O-LC-PART")

    reversal, replayed = refund(lc, "O-LC-PART", "R-LC-PART-1", {"L1": "33.33"})

    assert replayed == "false"
    assert accounts(reversal.totals) == R1
    assert_movement_consistent(reversal, "O-LC-PART", "R-LC-PART-1")
    assert [(ln.line_id, ln.paid_minor) for ln in reversal.lines if ln.paid_minor] == [("L1", 3333)]


def test_a_refund_replay_returns_the_same_bytes_and_says_so(lc):
    pay_refund_order(lc, "O-LC-REPLAY")

    first, first_replayed = refund(lc, "O-LC-REPLAY", "R-LC-REPLAY-1", {"L1": "33.33"})
    again, again_replayed = refund(lc, "O-LC-REPLAY", "R-LC-REPLAY-1", {"L1": "33.33"})

    assert (first_replayed, again_replayed) == ("false", "true")
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True
    )
    assert again.SerializeToString() == first.SerializeToString()
    assert accounts(again.totals) == R1


def test_a_refund_id_reused_with_other_content_is_already_exists_and_takes_nothing(lc):
    pay_refund_order(lc, "O-LC-CONFLICT")
    first, _ = refund(lc, "O-LC-CONFLICT", "R-LC-CONFLICT-1", {"L1": "33.33"})

    err = rpc_error(
        lc.settlement.Refund, refund_request("O-LC-CONFLICT", "R-LC-CONFLICT-1", {"L1": "33.34"})
    )

    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    # Nothing changed: the original still replays, and exactly 99.99 - 33.33 remains on L1.
    again, replayed = refund(lc, "O-LC-CONFLICT", "R-LC-CONFLICT-1", {"L1": "33.33"})
    assert replayed == "true"
    assert again.SerializeToString() == first.SerializeToString()
    err = rpc_error(
        lc.settlement.Refund, refund_request("O-LC-CONFLICT", "R-LC-CONFLICT-2", {"L1": "66.67"})
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    rest, _ = refund(lc, "O-LC-CONFLICT", "R-LC-CONFLICT-3", {"L1": "66.66"})
    assert sum(t.amount_minor for t in rest.totals) == 6666


def test_refunding_more_than_remains_is_failed_precondition(lc):
    pay_refund_order(lc, "O-LC-OVER")
    refund(lc, "O-LC-OVER", "R-LC-OVER-1", {"L1": "33.33"})
    refund(lc, "O-LC-OVER", "R-LC-OVER-2", {"L1": "0.01", "L2": "10.00"})

    # 99.99 - 33.33 - 0.01 = 66.65 remains on L1.
    err = rpc_error(lc.settlement.Refund, refund_request("O-LC-OVER", "R-LC-OVER-3", {"L1": "66.66"}))

    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    # The refused refund left nothing behind: its id is still free.
    reversal, replayed = refund(lc, "O-LC-OVER", "R-LC-OVER-3", {"L1": "66.65"})
    assert replayed == "false"
    assert accounts(reversal.totals) == R4


def test_the_partial_refunds_vector_runs_to_the_cent(lc):
    split = pay_refund_order(lc, "O-LC-8001")
    taken = []

    r1, replayed = refund(lc, "O-LC-8001", "R-LC-8001-1", {"L1": "33.33"})
    assert (accounts(r1.totals), replayed) == (R1, "false")
    taken.append(r1)

    r1_again, replayed = refund(lc, "O-LC-8001", "R-LC-8001-1", {"L1": "33.33"})
    assert replayed == "true"
    assert r1_again.SerializeToString() == r1.SerializeToString()

    err = rpc_error(
        lc.settlement.Refund, refund_request("O-LC-8001", "R-LC-8001-1", {"L1": "33.34"})
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()

    r2, replayed = refund(lc, "O-LC-8001", "R-LC-8001-2", {"L1": "0.01", "L2": "10.00"})
    assert (accounts(r2.totals), replayed) == (R2, "false")
    assert_movement_consistent(r2, "O-LC-8001", "R-LC-8001-2")
    taken.append(r2)

    err = rpc_error(
        lc.settlement.Refund, refund_request("O-LC-8001", "R-LC-8001-3", {"L1": "66.66"})
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()

    r4, replayed = refund(lc, "O-LC-8001", "R-LC-8001-4", {"L1": "66.65"})
    assert (accounts(r4.totals), replayed) == (R4, "false")
    assert_movement_consistent(r4, "O-LC-8001", "R-LC-8001-4")
    taken.append(r4)

    # Everything has been refunded: a full refund succeeds and takes nothing back.
    r5, replayed = refund(lc, "O-LC-8001", "R-LC-8001-5", full=True)
    assert (accounts(r5.totals), replayed) == ({}, "false")
    taken.append(r5)

    # Every account is back to zero on the order.
    net = minor_by_account(split.totals)
    for reversal in taken:
        for account, amount in minor_by_account(reversal.totals).items():
            net[account] = net.get(account, 0) - amount
    assert {a: n for a, n in net.items() if n} == {}


def test_a_full_refund_takes_back_exactly_what_remains_and_every_account_ends_at_zero(lc):
    split = pay_refund_order(lc, "O-LC-FULL")
    r1, _ = refund(lc, "O-LC-FULL", "R-LC-FULL-1", {"L1": "33.33"})
    assert accounts(r1.totals) == R1

    rest, replayed = refund(lc, "O-LC-FULL", "R-LC-FULL-2", full=True)

    assert replayed == "false"
    assert_movement_consistent(rest, "O-LC-FULL", "R-LC-FULL-2")
    assert sum(t.amount_minor for t in rest.totals) == 10999 - 3333
    paid = minor_by_account(split.totals)
    first = minor_by_account(r1.totals)
    second = minor_by_account(rest.totals)
    for account, amount in paid.items():
        assert first.get(account, 0) + second.get(account, 0) == amount, account
    assert set(second) | set(first) <= set(paid)
    # The promoters' entries on the order net to zero too.
    for promoter in (P1, P2):
        on_order = [e for e in entries(lc, f"promoter:{promoter}") if e.order_id == "O-LC-FULL"]
        assert on_order, promoter
        assert sum(e.amount_minor for e in on_order) == 0, promoter
    # And nothing remains to refund.
    err = rpc_error(lc.settlement.Refund, refund_request("O-LC-FULL", "R-LC-FULL-3", {"L2": "0.01"}))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()


def test_a_refund_for_an_unknown_order_is_not_found(lc):
    err = rpc_error(
        lc.settlement.Refund, refund_request("O-LC-NEVER-PAID", "R-LC-NEVER-1", full=True)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()


# --- prepaid cards (vector 02) -----------------------------------------------------------


def test_the_prepaid_card_vector_runs_to_the_cent(lc):
    pay_card_order(lc, "O-LC-9001")
    spa, p1, p2 = f"merchant:{M_CARD}", f"promoter:{P1}", f"promoter:{P2}"

    u1, replayed = redeem(lc, "O-LC-9001", "L1", "U-LC-9001-1", 3)
    assert replayed == "false"
    assert accounts(u1.totals) == {spa: "239.76", "platform": "14.99", p2: "29.97", p1: "14.98"}
    assert_movement_consistent(u1, "O-LC-9001", "U-LC-9001-1")

    u1_again, replayed = redeem(lc, "O-LC-9001", "L1", "U-LC-9001-1", 3)
    assert replayed == "true"
    assert u1_again.SerializeToString() == u1.SerializeToString()

    u2, replayed = redeem(lc, "O-LC-9001", "L1", "U-LC-9001-2", 1)
    assert replayed == "false"
    assert accounts(u2.totals) == {spa: "79.92", "platform": "4.99", p2: "9.99", p1: "5.00"}

    r1, replayed = refund(lc, "O-LC-9001", "R-LC-9001-1", {"L1": {"uses": 2}})
    assert replayed == "false"
    assert accounts(r1.totals) == {spa: "159.84", "platform": "9.99", p2: "19.98", p1: "9.99"}
    assert_movement_consistent(r1, "O-LC-9001", "R-LC-9001-1")

    r1_again, replayed = refund(lc, "O-LC-9001", "R-LC-9001-1", {"L1": {"uses": 2}})
    assert replayed == "true"
    assert r1_again.SerializeToString() == r1.SerializeToString()

    # 10 - 3 - 1 - 2 = 4 uses remain.
    err = rpc_error(lc.settlement.Redeem, redeem_request("O-LC-9001", "L1", "U-LC-9001-3", 5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()

    u4, replayed = redeem(lc, "O-LC-9001", "L1", "U-LC-9001-4", 4)
    assert replayed == "false"
    assert accounts(u4.totals) == {spa: "319.68", "platform": "19.98", p2: "39.96", p1: "19.98"}

    r2, replayed = refund(lc, "O-LC-9001", "R-LC-9001-2", full=True)
    assert (accounts(r2.totals), replayed) == ({}, "false")


def test_redeeming_a_line_that_is_not_a_card_is_failed_precondition(lc):
    pay_refund_order(lc, "O-LC-NOT-CARD")
    err = rpc_error(lc.settlement.Redeem, redeem_request("O-LC-NOT-CARD", "L1", "U-LC-NOT-CARD", 1))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()


# --- balances and payouts ----------------------------------------------------------------


def balance_network(lc, tag):
    """A fresh promoter with a bound customer, so this test's balances are its own."""
    promoter, customer = f"BAL-{tag}-P", f"BAL-{tag}-C"
    lc.network.UpsertPromoter(network_pb2.UpsertPromoterRequest(id=promoter), timeout=10)
    lc.network.BindCustomer(
        network_pb2.BindCustomerRequest(customer=customer, promoter=promoter), timeout=10
    )
    return f"promoter:{promoter}", customer


def pay_balance_order(lc, order_id, customer, price, paid_at):
    split = compute(
        lc, order(order_id, M_BALANCE, customer, [line("L1", "X", "misc", price)], paid_at=paid_at)
    )
    assert split.ruleset_version == lc.versions[M_BALANCE], "the canary rule set did not apply"
    return split


def pay_out(lc, batch_id, account, expected_minor):
    """CreatePayout (minimum 0), checks this account's instruction, confirms it PAID."""
    created = lc.settlement.CreatePayout(
        settlement_pb2.CreatePayoutRequest(batch_id=batch_id, minimum_minor=0), timeout=10
    )
    assert not created.replayed
    assert created.batch.batch_id == batch_id
    mine = own_instructions(created.batch, account)
    assert [(i.currency, i.amount_minor) for i in mine] == [("CNY", expected_minor)]
    confirmed = lc.settlement.ConfirmPayout(
        settlement_pb2.ConfirmPayoutRequest(
            batch_id=batch_id, account=account, outcome=settlement_pb2.PAYOUT_OUTCOME_PAID
        ),
        timeout=10,
    )
    assert not confirmed.replayed
    return created


def test_with_no_hold_a_paid_order_is_available_and_a_confirmed_payout_moves_it_to_paid(lc):
    account, customer = balance_network(lc, "PAY")
    assert amounts(balance(lc, account)) == amounts(settlement_pb2.Balance())

    split = pay_balance_order(lc, "O-LC-BAL-PAY", customer, "200.00", "2026-11-10T00:00:00Z")
    assert minor_by_account(split.totals)[account] == 2000

    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=2000, in_payout=0, paid=0, debt=0
    )
    [entry] = entries(lc, account)
    assert (entry.amount_minor, entry.status, entry.source_kind, entry.order_id) == (
        2000,
        "available",
        "split",
        "O-LC-BAL-PAY",
    )
    assert entry.available_at == ts("2026-11-10T00:00:00Z")

    created = lc.settlement.CreatePayout(
        settlement_pb2.CreatePayoutRequest(batch_id="B-LC-PAY", minimum_minor=0), timeout=10
    )
    assert not created.replayed
    mine = own_instructions(created.batch, account)
    assert [(i.currency, i.amount_minor, i.entries) for i in mine] == [("CNY", 2000, 1)]
    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=0, in_payout=2000, paid=0, debt=0
    )

    confirm = settlement_pb2.ConfirmPayoutRequest(
        batch_id="B-LC-PAY", account=account, outcome=settlement_pb2.PAYOUT_OUTCOME_PAID
    )
    assert not lc.settlement.ConfirmPayout(confirm, timeout=10).replayed
    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=0, in_payout=0, paid=2000, debt=0
    )
    assert lc.settlement.ConfirmPayout(confirm, timeout=10).replayed
    assert [e.status for e in entries(lc, account)] == ["paid"]

    # A later batch never pays the entry twice.
    later = lc.settlement.CreatePayout(
        settlement_pb2.CreatePayoutRequest(batch_id="B-LC-PAY-2", minimum_minor=0), timeout=10
    )
    assert own_instructions(later.batch, account) == []


def test_a_payout_batch_created_again_with_the_same_as_of_is_replayed(lc):
    request = settlement_pb2.CreatePayoutRequest(
        batch_id="B-LC-REPLAY-ASOF", as_of=ts("2026-11-15T00:00:00Z"), minimum_minor=0
    )
    created = lc.settlement.CreatePayout(request, timeout=10)
    again = lc.settlement.CreatePayout(request, timeout=10)

    assert (created.replayed, again.replayed) == (False, True)
    assert again.batch == created.batch
    assert again.batch.as_of == ts("2026-11-15T00:00:00Z")

    other = settlement_pb2.CreatePayoutRequest(
        batch_id="B-LC-REPLAY-ASOF", as_of=ts("2026-11-15T00:00:00Z"), minimum_minor=1
    )
    err = rpc_error(lc.settlement.CreatePayout, other)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()


def test_a_payout_request_retried_as_is_without_as_of_is_replayed(lc):
    # The retry of a request whose answer was lost: the same bytes, as_of left to its
    # default ("now"). Idempotent by batch id (PRODUCT.md §4), it must return the batch.
    request = settlement_pb2.CreatePayoutRequest(batch_id="B-LC-REPLAY-NOW", minimum_minor=0)
    created = lc.settlement.CreatePayout(request, timeout=10)
    again = lc.settlement.CreatePayout(request, timeout=10)

    assert (created.replayed, again.replayed) == (False, True)
    assert again.batch == created.batch


def test_a_refund_after_payout_is_debt_that_later_commissions_pay_off_first(lc):
    account, customer = balance_network(lc, "DEBT")
    pay_balance_order(lc, "O-LC-DEBT-1", customer, "200.00", "2026-11-10T00:00:00Z")
    pay_out(lc, "B-LC-DEBT", account, 2000)
    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=0, in_payout=0, paid=2000, debt=0
    )

    # 150.00 of 200.00 back: the promoter gives back 15.00 it was already paid.
    reversal, _ = refund(lc, "O-LC-DEBT-1", "R-LC-DEBT-1", {"L1": "150.00"})
    assert minor_by_account(reversal.totals)[account] == 1500

    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=0, in_payout=0, paid=2000, debt=1500
    )
    negative = [e for e in entries(lc, account) if e.amount_minor < 0]
    assert [(e.amount_minor, e.source_kind, e.source_id, e.order_id) for e in negative] == [
        (-1500, "refund", "R-LC-DEBT-1", "O-LC-DEBT-1")
    ]

    # 10.00 of new commission: all of it pays off debt.
    pay_balance_order(lc, "O-LC-DEBT-2", customer, "100.00", "2026-11-11T00:00:00Z")
    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=0, in_payout=0, paid=2000, debt=500
    )
    # And a payout has nothing to pay this account.
    nothing = lc.settlement.CreatePayout(
        settlement_pb2.CreatePayoutRequest(batch_id="B-LC-DEBT-2", minimum_minor=0), timeout=10
    )
    assert own_instructions(nothing.batch, account) == []

    # Another 10.00: 5.00 clears the rest of the debt, 5.00 is available.
    pay_balance_order(lc, "O-LC-DEBT-3", customer, "100.00", "2026-11-12T00:00:00Z")
    assert amounts(balance(lc, account)) == dict(
        deferred=0, pending=0, available=500, in_payout=0, paid=2000, debt=0
    )
    settled = lc.settlement.CreatePayout(
        settlement_pb2.CreatePayoutRequest(batch_id="B-LC-DEBT-3", minimum_minor=0), timeout=10
    )
    assert [i.amount_minor for i in own_instructions(settled.batch, account)] == [500]


# --- reconciliation ----------------------------------------------------------------------


def test_reconcile_finds_no_discrepancy_in_what_the_session_stored(lc):
    pay_refund_order(lc, "O-LC-RECON")
    refund(lc, "O-LC-RECON", "R-LC-RECON-1", {"L1": "33.33"})

    report = lc.settlement.Reconcile(settlement_pb2.ReconcileRequest(), timeout=30)

    assert list(report.discrepancies) == []
    assert report.orders_checked >= 1
    assert report.accounts_checked >= 5


def test_reconcile_reports_an_order_prorata_never_saw_as_missing(lc):
    pay_refund_order(lc, "O-LC-RECON-KNOWN")
    refund(lc, "O-LC-RECON-KNOWN", "R-LC-RECON-KNOWN-1", {"L1": "33.33"})

    report = lc.settlement.Reconcile(
        settlement_pb2.ReconcileRequest(
            orders=[
                settlement_pb2.ExternalOrder(
                    order_id="O-LC-RECON-KNOWN", amount_paid_minor=10999, amount_refunded_minor=3333
                ),
                settlement_pb2.ExternalOrder(order_id="O-LC-RECON-GHOST", amount_paid_minor=5000),
            ]
        ),
        timeout=30,
    )

    about = lambda subject: [d.kind for d in report.discrepancies if d.subject == subject]  # noqa: E731
    assert about("O-LC-RECON-GHOST") == ["missing"]
    # The order the two sides agree on is fine; every other stored order is `unknown` to a
    # file that does not list it, nothing else is wrong.
    assert about("O-LC-RECON-KNOWN") == []
    assert {d.kind for d in report.discrepancies} == {"missing", "unknown"}
