"""bench/ann_speed.py keeps each measurement so a long run resumes; a kept one must match its inputs."""

import json

from bench.ann_speed import cached


def test_a_kept_measurement_is_reused_only_for_the_same_inputs(tmp_path):
    calls = []

    def make(value):
        def run():
            calls.append(value)
            return {"qps": value}
        return run

    path = tmp_path / "search-x.json"
    spec = {"phase": "search", "points": [{"nprobe": 16}, {"nprobe": 64}]}
    assert cached(path, make(1), spec=spec) == {"qps": 1}
    assert cached(path, make(2), spec=json.loads(json.dumps(spec))) == {"qps": 1}  # resumed, not re-measured
    assert calls == [1]
    other = {"phase": "search", "points": [{"nprobe": 32}]}
    assert cached(path, make(3), spec=other) == {"qps": 3}  # other operating points: measured again
    assert calls == [1, 3]
    assert "__spec__" not in cached(path, make(4), spec=other)  # the key never reaches the results
    assert calls == [1, 3]
