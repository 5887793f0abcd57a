"""Review: redact masks real secrets wherever they leak, and leaves ordinary text alone when a dev key is short
(moto/localstack ``test``, MinIO ``minioadmin``): a failing trial keeps its own exception and traceback."""
from __future__ import annotations

import pytest

from fmx import storage as st
from fmx.trial_support import MaskedTrialError, masked_trial_error

SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_TRACKING_TOKEN", st.SECRET_FILE_ENV)
LONG = "fmxReviewSecret/ABCxyz+0123456789"


@pytest.fixture
def env(monkeypatch):
    for k in SECRET_ENV:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def _secrets(**values):
    return st.secret_values(values)


# ------------------------------------------------------------------ ordinary text stays as it is
@pytest.mark.parametrize("key", ["test", "testing", "minioadmin", "1234"])
def test_short_dictionary_like_keys_leave_paths_words_and_numbers_alone(key):
    secrets = _secrets(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=key, MLFLOW_TRACKING_PASSWORD=key)
    text = (f'Traceback (most recent call last):\n  File "/work/main/tests/test_x.py", line 1234, in test_fit\n'
            f"    {key}_loader = build({key!r})\nValueError: {key} failed: bucket {key}s/{key}-data not found "
            f"at http://127.0.0.1:9000/{key}/ (user {key})")
    assert st.redact(text, secrets) == text


def test_a_failing_trial_under_dev_keys_keeps_its_exception(env):
    env.setenv("AWS_ACCESS_KEY_ID", "test")
    env.setenv("AWS_SECRET_ACCESS_KEY", "test")
    try:  # raised here: this file's path holds /tests/ and the message the word "test"
        raise ValueError("the test split is empty; check data.test_fraction")
    except ValueError as exc:
        assert masked_trial_error(exc) is None


# ------------------------------------------------------------------ short secrets, where they leak
@pytest.mark.parametrize("text, shown", [
    ("AWS_SECRET_ACCESS_KEY=test HOME=/tests", "AWS_SECRET_ACCESS_KEY=*** HOME=/tests"),
    ("environ({'AWS_ACCESS_KEY_ID': 'test', 'AWS_SECRET_ACCESS_KEY': 'test', 'PWD': '/tests'})",
     "environ({'AWS_ACCESS_KEY_ID': '***', 'AWS_SECRET_ACCESS_KEY': '***', 'PWD': '/tests'})"),
    ('{"secret_key": "test", "name": "test"}', '{"secret_key": "***", "name": "test"}'),
    ('{\\"secretKey\\": \\"test\\"}', '{\\"secretKey\\": \\"***\\"}'),
    ("storage: {secret-key: test, password : test}", "storage: {secret-key: ***, password : ***}"),
    ("S3Client(aws_secret_access_key='test') in test", "S3Client(aws_secret_access_key='***') in test"),
    ("http://fmx:test@127.0.0.1:5000/tests", "http://***@127.0.0.1:5000/tests"),
    ("s3://test:test@bucket/tests", "s3://***@bucket/tests"),
])
def test_short_secret_masked_as_a_credential_value(text, shown):
    assert st.redact(text, _secrets(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")) == shown


@pytest.mark.parametrize("password", ["hunter2", "p@ss", "Xy7!q"])
def test_short_random_looking_password_masked_as_a_whole_token(password):
    from urllib.parse import quote
    secrets = _secrets(MLFLOW_TRACKING_PASSWORD=password)
    out = st.redact(f"401 for password {password}. sent {quote(password, safe='')} (retry)", secrets)
    assert password not in out and quote(password, safe="") not in out and out.endswith("(retry)"), out
    inside = f"0x{password}9 and x{password}"  # part of a longer token: not this value
    assert st.redact(inside, secrets) == inside


def test_long_secret_masked_anywhere_even_inside_a_word_or_path(env):
    secrets = _secrets(AWS_SECRET_ACCESS_KEY=LONG, AWS_ACCESS_KEY_ID="AKIAFMXREVIEW0000001")
    out = st.redact(f"/tmp/x{LONG}y/AKIAFMXREVIEW0000001z key={LONG[:-1]}", secrets)
    assert LONG not in out and "AKIAFMXREVIEW0000001" not in out and "fmxReviewSecret" in out  # prefix is no key


def test_a_trial_error_quoting_a_short_secret_is_still_masked(env):
    env.setenv("AWS_ACCESS_KEY_ID", "minioadmin")
    env.setenv("AWS_SECRET_ACCESS_KEY", "minioadmin")
    env.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    try:
        raise OSError("minioadmin: s3 refused AWS_SECRET_ACCESS_KEY=minioadmin; mlflow password hunter2 rejected")
    except OSError as exc:
        masked = masked_trial_error(exc)
    assert isinstance(masked, MaskedTrialError)
    text = str(masked)
    assert "AWS_SECRET_ACCESS_KEY=***;" in text and "hunter2" not in text, text
    assert text.startswith("OSError: minioadmin: s3 refused")  # the access key ID alone, as an identifier, stays


def test_refused_storage_uri_message_survives_its_own_redaction():
    # Was: "... (user:password@ or ?secret_key=); use s3://..." read "?secret_key=*** use" once redacted (every
    # command prints its errors through redact): the query-value mask took "=);" for a secret.
    with pytest.raises(ValueError) as exc:
        st.resolve_storage("s3://key:pw@bucket/ray")
    message = st.redact(str(exc.value), [])
    assert "s3://***@bucket/ray" in message and "?secret_key= parameter); use s3://bucket/prefix" in message, message


@pytest.mark.parametrize("key", ["my-secret", "minio_admin", "dev.key"])
def test_short_word_like_keys_joined_by_separators_are_words_too(key):
    secrets = _secrets(AWS_SECRET_ACCESS_KEY=key)
    text = f"module {key}_utils and {key} failed in /srv/{key}/x"
    assert st.redact(text, secrets) == text
    assert st.redact(f"AWS_SECRET_ACCESS_KEY: {key}\n", secrets) == "AWS_SECRET_ACCESS_KEY: ***\n"


def test_a_symbol_at_a_short_secrets_edge_delimits_it():
    secrets = _secrets(MLFLOW_TRACKING_PASSWORD="#pass1!")
    assert st.redact("sent x#pass1!y", secrets) == "sent x***y"
