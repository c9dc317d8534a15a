"""Beat's settings: from the environment (the Lambda) and from the app given with -A (the CLI)."""

from __future__ import annotations

import pytest
from celery import Celery

from oomcheck.config.celery_app import app_variables, merge
from oomcheck.config.settings import SettingsError, from_env
from oomcheck.wiring import build_deps

BROKER = "redis://127.0.0.1:6390/0"


def test_the_environment_sets_the_scheduler_redbeat_and_the_grace():
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": BROKER,
            "OOMCHECK_BEAT_SCHEDULER": "redbeat.RedBeatScheduler",
            "OOMCHECK_REDBEAT_REDIS_URL": "redis://:s3cret@10.0.0.9:6379/2",
            "OOMCHECK_REDBEAT_KEY_PREFIX": "beat:",
            "OOMCHECK_BEAT_GRACE": "30",
            "OOMCHECK_BEAT_CONTAINERS": "celery-beat*, beat",
        }
    )
    assert settings.beat_scheduler == "redbeat.RedBeatScheduler"
    assert settings.redbeat_key_prefix == "beat:"
    assert settings.policy.beat_grace_s == 30.0
    assert settings.policy.beat_containers == ("celery-beat*", "beat")
    # RedBeat's password is a secret like the broker's
    assert "s3cret" in settings.secrets()
    defaults = from_env({"OOMCHECK_BROKER_URL": BROKER, "OOMCHECK_REDBEAT_KEY_PREFIX": ""})
    assert (defaults.beat_scheduler, defaults.redbeat_key_prefix) == (None, "redbeat:")
    assert defaults.policy.beat_grace_s == 60.0
    with pytest.raises(SettingsError, match="OOMCHECK_BEAT_GRACE"):
        from_env({"OOMCHECK_BROKER_URL": BROKER, "OOMCHECK_BEAT_GRACE": "-1"})


def test_the_app_gives_beat_scheduler_and_redbeats_settings():
    app = Celery("proj", broker=BROKER, set_as_current=False)
    app.conf.beat_scheduler = "redbeat.RedBeatScheduler"
    app.conf.redbeat_key_prefix = "proj-beat:"
    app.conf.redbeat_lock_key = "proj-beat::lock"
    settings = from_env(merge({}, app_variables(app)))
    assert settings.beat_scheduler == "redbeat.RedBeatScheduler"
    assert settings.redbeat_key_prefix == "proj-beat:"
    assert settings.redbeat_lock_key == "proj-beat::lock"
    # RedBeat's Redis defaults to the broker: the source is wired on it
    deps = build_deps(settings)
    assert deps.beat is not None and "beat" not in deps.off
    assert deps.beat.describe() == "RedBeat on redis://127.0.0.1:6390/0, key prefix 'proj-beat:'"
    # the environment beats the app
    env = {"OOMCHECK_REDBEAT_KEY_PREFIX": "other:"}
    assert from_env({**merge(env, app_variables(app))}).redbeat_key_prefix == "other:"


def test_an_app_on_the_default_scheduler_leaves_the_source_off_saying_why():
    app = Celery("proj", broker=BROKER, set_as_current=False)
    deps = build_deps(from_env(merge({}, app_variables(app))))
    assert deps.beat is None
    assert deps.off["beat"].startswith("the default scheduler keeps its schedule in a shelve file")
    assert "redbeat.RedBeatScheduler" in deps.off["beat"]


def test_redbeat_on_a_rabbitmq_broker_needs_its_own_url():
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "amqp://guest@127.0.0.1//",
            "OOMCHECK_BEAT_SCHEDULER": "redbeat.RedBeatScheduler",
        }
    )
    deps = build_deps(settings)
    assert deps.beat is None and "OOMCHECK_REDBEAT_REDIS_URL" in deps.off["beat"]
