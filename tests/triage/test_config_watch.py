"""A changed admin mapping is picked up without a redeploy; a broken one is refused."""

import logging
import os
import shutil

import pytest

from domain.errors import ConfigError
from domain.mapping import DEFAULT_MAPPING_PATH
from tests.triage.test_runtime import ENV
from triage.config_watch import MappingWatch
from triage.runtime import ServiceProvider, build_service


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _touch(path, text):
    path.write_text(text, encoding="utf-8")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime, always


@pytest.fixture
def mapping_env(tmp_path, monkeypatch):
    path = tmp_path / "mapping.yaml"
    shutil.copy(DEFAULT_MAPPING_PATH, path)
    env = {**ENV, "ENRICH_MAPPING_PATH": str(path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env, path


def test_a_changed_mapping_rebuilds_the_service_after_the_check_interval(mapping_env):
    env, path = mapping_env
    clock = Clock()
    provider = ServiceProvider(
        lambda: build_service(env),
        watch=MappingWatch(lambda: [str(path)], check_every_s=30, clock=clock),
    )
    first = provider.get()
    text = path.read_text(encoding="utf-8").replace("category: 0.85", "category: 0.95")
    _touch(path, text)
    clock.t = 10
    assert provider.get() is first  # not yet checked again
    clock.t = 31
    second = provider.get()
    assert second is not first
    assert second.pipeline.mapping.threshold("category") == 0.95
    assert second.pipeline.mapping.fingerprint != first.pipeline.mapping.fingerprint


def test_a_broken_change_is_refused_once_and_the_last_valid_mapping_stays(mapping_env, caplog):
    env, path = mapping_env
    clock = Clock()
    provider = ServiceProvider(
        lambda: build_service(env),
        watch=MappingWatch(lambda: [str(path)], check_every_s=30, clock=clock),
    )
    first = provider.get()
    good = path.read_text(encoding="utf-8")
    _touch(path, good.replace("impact: 0.8", "impact: 7"))  # out of range
    with caplog.at_level(logging.ERROR):
        for t in (31, 62, 93):
            clock.t = t
            assert provider.get() is first
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "min_confidence.impact" in refusals[0].getMessage()
    _touch(path, good)  # fixed
    clock.t = 124
    assert provider.get() is not first


def test_without_a_watch_the_service_is_built_once(mapping_env):
    env, path = mapping_env
    builds = []

    def factory():
        builds.append(1)
        return build_service(env)

    provider = ServiceProvider(factory)
    provider.get()
    _touch(path, path.read_text(encoding="utf-8"))
    provider.get()
    assert len(builds) == 1


def test_an_invalid_mapping_at_start_is_logged_once_until_it_changes(mapping_env, caplog):
    env, path = mapping_env
    good = path.read_text(encoding="utf-8")
    _touch(path, good.replace("impact: 0.8", "impact: 7"))
    clock = Clock()
    builds = []

    def factory():
        builds.append(1)
        return build_service(env)

    provider = ServiceProvider(
        factory, watch=MappingWatch(lambda: [str(path)], check_every_s=30, clock=clock)
    )
    with caplog.at_level(logging.ERROR):
        for t in (0, 5, 40, 80):
            clock.t = t
            with pytest.raises(ConfigError, match=r"min_confidence\.impact"):
                provider.get()
    assert len(builds) == 1
    assert len([r for r in caplog.records if "cannot start" in r.getMessage()]) == 1
    _touch(path, good)
    clock.t = 120
    assert provider.get() is not None and len(builds) == 2
