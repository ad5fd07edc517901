"""The demo's estimate of time left weighs stages by their expected length."""

from safeswap.demo import run


def test_estimate_weighs_stages(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(run.time, "time", lambda: now[0])
    printed = []
    monkeypatch.setattr(run.console, "print", lambda text: printed.append(text))
    clock = run._StageClock([8.0, 1.0, 1.0])
    now[0] += 800  # training: 100 s per unit of weight
    clock.done("experts")
    now[0] += 100
    clock.done("evaluation a")
    now[0] += 120
    clock.done("evaluation b")
    assert "in 800 s; about 3.3 min left" in printed[0]  # 2 units x 100 s, not 2 stages x 800 s
    assert "in 100 s; about 1.7 min left" in printed[1]
    assert printed[2].endswith("in 120 s")
