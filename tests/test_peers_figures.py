"""The peers bench's comparisons: each a median of ratios paired within a round."""

# Local
from bench.peers.rounds import IMAGES, PLANS, Results, figures, markdown_table

CELL = ("my_model", IMAGES[0], 1)


def _results(rates, p50_ms):
    results = Results()
    for variant, values in rates.items():
        results.rates[variant] = {CELL: list(values)}
    for variant, values in p50_ms.items():
        results.p50_ms[variant] = {CELL: list(values)}
    return results


def _figure(found, prefix):
    (figure,) = [f for f in found if f.name.startswith(prefix)]
    return figure


def test_http_over_grpc_pairs_the_rounds_where_a_ratio_of_medians_would_not():
    # A slow round slows both of ours; paired, HTTP is at 0.95 of gRPC in every round, while
    # the medians (200 against 300) would say 0.67.
    results = _results(
        {
            "ours gRPC": [100, 300, 400],
            "ours HTTP": [95, 200, 380],
            "plain FastAPI": [90, 250, 350],
        },
        {"ours gRPC": [10, 4, 3], "ours HTTP": [11, 5, 3], "plain FastAPI": [11, 4.4, 2.7]},
    )
    found = figures(PLANS[True], results)
    http = _figure(found, "ours HTTP / ours gRPC")
    assert abs(http.value - 0.95) < 1e-9 and http.met
    assert "| 0.95 |" in markdown_table(PLANS[True], results)


def test_p50_figure_is_ours_over_the_best_peers_in_each_round_and_wants_at_most_one():
    results = _results(
        {"ours gRPC": [100, 300, 400], "ours HTTP": [100, 300, 400], "plain FastAPI": [90, 250, 350],
         "LitServe": [80, 200, 300]},
        {"ours gRPC": [10, 4, 3], "ours HTTP": [10, 4, 3], "plain FastAPI": [9, 5, 2.5],
         "LitServe": [5, 5, 5]},
    )
    found = figures(PLANS[True], results)
    p50 = _figure(found, "p50 ours gRPC / best peer's")
    # The best peer is the one with the most requests/s (plain FastAPI), not the fastest p50.
    assert "plain FastAPI" in p50.note
    assert abs(p50.value - 10 / 9) < 1e-9  # the median of 10/9, 4/5 and 3/2.5
    assert not p50.met
    ratio = _figure(found, "ours gRPC / best peer")
    assert abs(ratio.value - 400 / 350) < 1e-9 and ratio.met  # of 100/90, 300/250, 400/350
