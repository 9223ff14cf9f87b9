"""The seed summary: mean and a t-based 95% confidence interval per run and headline metric."""

import math

import pytest
from scipy import stats

from fragile_neurons.sweep import mean_ci, render, render_table, reproduced, summarise


def test_mean_ci_is_students_t():
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    mean, low, high = mean_ci(values)
    half = stats.t.ppf(0.975, 4) * stats.tstd(values) / math.sqrt(5)
    assert mean == pytest.approx(0.3)
    assert (low, high) == pytest.approx((0.3 - half, 0.3 + half))


def test_mean_ci_degenerate_cases():
    assert mean_ci([0.2, 0.2]) == (0.2, 0.2, 0.2)
    mean, low, high = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_summarise_groups_by_run_and_keeps_each_seed():
    records = [
        {
            "experiment": "a",
            "rev": "1",
            "seed": 0,
            "runs": {"mnist": {"spearman_rho": 0.5, "fgsm_auc_gain": 0.01}},
        },
        {
            "experiment": "b",
            "rev": "2",
            "seed": 1,
            "runs": {"mnist": {"spearman_rho": 0.3}, "cifar10": {"spearman_rho": -0.1}},
        },
    ]
    summary = summarise(records)
    assert summary["mnist"]["spearman_rho"]["n"] == 2
    assert summary["mnist"]["spearman_rho"]["mean"] == pytest.approx(0.4)
    assert summary["mnist"]["spearman_rho"]["values"] == {"0": 0.5, "1": 0.3}
    assert summary["mnist"]["fgsm_auc_gain"]["ci95_low"] is None  # one seed: no interval
    assert summary["cifar10"]["spearman_rho"]["n"] == 1
    text = render(summary)
    assert "run mnist" in text and "n < 2" in text


def test_a_run_counts_only_when_all_its_stages_ran_with_the_experiments_params():
    params = {
        "seed": 1,
        "runs": {"mnist": {"train": {"epochs": 3}}, "cifar10": {}},
        "correlate": {"top_fraction": 0.25},
    }
    lock = {
        "stages": {
            "train@mnist": {
                "params": {"params.yaml": {"seed": 1, "runs.mnist.train": {"epochs": 3}}}
            },
            "correlate@mnist": {"params": {"params.yaml": {"correlate.top_fraction": 0.25}}},
            # the baseline's, kept by an experiment that targeted mnist only
            "train@cifar10": {"params": {"params.yaml": {"seed": 0}}},
            "correlate@cifar10": {"params": {"params.yaml": {"correlate.top_fraction": 0.25}}},
        }
    }
    assert reproduced(lock, params, "mnist")
    assert not reproduced(lock, params, "cifar10")
    assert not reproduced(lock, params, "fashion")  # no stage at all
    params["runs"]["mnist"]["train"]["epochs"] = 5
    assert not reproduced(lock, params, "mnist")


def test_the_experiment_table_fits_80_columns():
    records = [
        {"experiment": "a-very-long-experiment-name", "rev": "1", "seed": 12345,
         "runs": {"cifar10": {"test_accuracy": 0.7791, "spearman_rho": -0.123456789,
                              "spearman_p": 1.2345e-05, "fgsm_auc_gain": -0.0481234,
                              "pgd_auc_gain": -0.04612, "pgd_margin_over_random": -0.02134}}},
        {"experiment": "b", "rev": "2", "seed": 1, "runs": {"mnist": {"test_accuracy": 0.99}}},
    ]  # fmt: skip
    lines = render_table(records).splitlines()
    assert len(lines) == 4 and max(map(len, lines)) <= 80
    assert " -0.123 " in lines[2] and " 1.23e-05 " in lines[2] and lines[3].endswith(" -")
