"""An audit job's sampling settings reach the engine; a job queued before they existed keeps first-N."""

from worker import job_configs


def test_audit_jobs_pass_sampling_and_seed():
    config = job_configs.audit_config({"samples": 8, "sampling": "shuffle", "seed": 4})
    assert (config.sampling, config.seed) == ("shuffle", 4)
    assert job_configs.audit_config({"samples": 8, "sampling": "first"}).sampling == "first"


def test_a_job_from_before_seeded_sampling_still_takes_the_first_pairs():
    assert job_configs.audit_config({"samples": 8}).sampling == "first"
