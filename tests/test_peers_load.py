"""The peers bench's rate of a window (bench/peers/load.py ``completion_rate``): timed between
calls' ends, so that a window's edges do not step the figure by a whole call."""

# Local
from bench.peers.load import completion_rate


def _back_to_back(first_end: float, period: float, count: int):
    return [(first_end + i * period - period, first_end + i * period) for i in range(count)]


def test_one_client_rate_is_the_inverse_of_its_period_wherever_the_window_falls():
    calls = [_back_to_back(0.1, 0.17, 100)]
    for start in (0.0, 0.05, 0.16, 1.33):
        rate = completion_rate(calls, start, start + 7.0)
        assert abs(rate - 1 / 0.17) < 1e-9, (start, rate)


def test_clients_rates_add_up():
    calls = [_back_to_back(0.0, 0.5, 40), _back_to_back(0.2, 0.25, 80)]
    assert abs(completion_rate(calls, 1.0, 9.0) - (2 + 4)) < 1e-9


def test_a_count_over_the_window_when_a_client_ends_fewer_than_two_calls_in_it():
    calls = [_back_to_back(1.0, 0.1, 50), [(0.0, 3.0)]]
    # 50 ends in [1, 5.9] for the first client, one for the second: 51 over 10 s.
    assert abs(completion_rate(calls, 0.0, 10.0) - 5.1) < 1e-9
    assert completion_rate([[]], 0.0, 10.0) == 0.0


def test_calls_ending_outside_the_window_are_left_out():
    calls = [[(0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 9.0)]]
    # In [0.9, 4.5]: ends at 1, 2 and 4, two intervals over 3 s.
    assert abs(completion_rate(calls, 0.9, 4.5) - 2 / 3) < 1e-9
