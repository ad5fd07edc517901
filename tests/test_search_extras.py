"""[search] and [ray] declare what the search code imports: Optuna for the study, Ray only for --ray-address."""

from test_extras import declared, walk


def test_search_needs_optuna_and_not_ray():
    needs = walk("search")
    assert "optuna" in needs and "ray" not in needs
    assert {"optuna"} <= declared(("search",))


def test_ray_needs_ray_and_its_extra_brings_optuna_too():
    assert "ray" in walk("ray")
    assert {"ray", "optuna"} <= declared(("ray",))
