"""The presets' cron expansions, kept in a table so they need no croniter import, are
what croniter itself expands them to."""

from croniter import croniter

from seeknal_core import schedule


def test_preset_table_is_croniters_expansion():
    assert set(schedule._PRESET_EXPANSIONS) == set(schedule.PRESETS.values())
    for cron, (fields, nth) in schedule._PRESET_EXPANSIONS.items():
        expanded, expected_nth, *_ = croniter.expand(cron)
        assert (fields, nth) == (expanded, expected_nth), cron


def test_a_preset_schedule_does_not_import_croniter():
    import subprocess
    import sys

    code = ("import sys; from seeknal_core.schedule import Schedule; Schedule('@daily', 'Europe/Amsterdam')"
            ".ticks(0, 86400 * 3); print('croniter' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
