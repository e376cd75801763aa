import math

import pytest

from scalping_assets.market.symbols import Family, UnknownSymbolError, catalog, get_symbol, simulated_symbols

# Every index the product promises to simulate, with its family and cadence.
SIMULATED = {
    **{f"R_{n}": (Family.VOLATILITY, 2) for n in (10, 25, 50, 75, 100)},
    **{f"1HZ{n}V": (Family.VOLATILITY, 1) for n in (10, 25, 50, 75, 100)},
    **{f"{k}{n}": (Family.CRASH_BOOM, 1) for k in ("CRASH", "BOOM") for n in (300, 500, 1000)},
    **{f"JD{n}": (Family.JUMP, 1) for n in (10, 25, 50, 75, 100, 150, 200)},
    "stpRNG": (Family.STEP, 1),
    "RDBULL": (Family.DAILY_RESET, 2),
    "RDBEAR": (Family.DAILY_RESET, 2),
}


def test_every_promised_index_is_simulated_with_its_family_and_cadence():
    for name, (family, interval) in SIMULATED.items():
        spec = get_symbol(name)
        assert spec.simulated, name
        assert spec.family is family, name
        assert spec.tick_interval_s == interval, name
        assert spec.deriv


def test_catalog_covers_deriv_metadata_and_the_planted_signal():
    names = set(catalog())
    assert set(SIMULATED) <= names
    assert {"R_200", "R_300", "RB100", "RB200", "stpEURUSD"} <= names  # collectable, not simulated
    assert not get_symbol("RB100").simulated
    assert get_symbol("SIG_AR1").family is Family.PLANTED and not get_symbol("SIG_AR1").deriv
    assert set(simulated_symbols()) == set(SIMULATED) | {"SIG_AR1"}


@pytest.mark.parametrize("name", sorted(catalog()))
def test_pip_size_and_decimals_agree(name):
    spec = get_symbol(name)
    assert math.isclose(spec.pip_size, 10.0**-spec.pip_decimals)
    assert spec.display_name


def test_published_generator_parameters():
    assert get_symbol("R_75").generator.sigma == 0.75
    assert get_symbol("1HZ10V").generator.sigma == 0.10
    crash = get_symbol("CRASH300").generator
    assert (crash.mean_event_gap, crash.event, crash.mdt, crash.mut) == (300, "down", -14.619814, 0.048802)
    boom = get_symbol("BOOM1000").generator
    assert (boom.event, boom.mdt, boom.mut) == ("up", -0.005629, 5.619)
    jump = get_symbol("JD150").generator
    assert (jump.sigma, jump.jumps_per_day, jump.jump_scale) == (1.5, 72, 30)
    assert get_symbol("stpRNG").generator.step == 0.1 and get_symbol("stpRNG").pip_size == 0.1
    bull, bear = get_symbol("RDBULL").generator, get_symbol("RDBEAR").generator
    assert (bull.dividend, bull.sigma, bull.daily_reset) == (-35, 1.75, True)
    assert (bear.dividend, bear.sigma, bear.daily_reset) == (20, 1.55, True)


def test_unknown_symbol_names_the_valid_ones():
    with pytest.raises(UnknownSymbolError) as err:
        get_symbol("R_1000")
    message = str(err.value)
    assert "'R_1000'" in message
    for name in ("R_10", "CRASH500", "stpRNG", "JD200"):
        assert name in message


def test_dt_is_the_tick_interval_in_years():
    assert get_symbol("R_50").dt == 2 / 31_536_000
    assert get_symbol("R_50").ticks_per_day == 43_200
    assert get_symbol("1HZ50V").ticks_per_day == 86_400
