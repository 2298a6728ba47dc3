"""Coefficient order conversions against the layouts written in SPEC section 2."""

from __future__ import annotations

import numpy as np
import torch

from bench import coeffs


def test_driver_pirender_round_trip_and_layout() -> None:
    driver = torch.arange(73.0)[None].repeat(2, 1)
    pir = coeffs.to_pirender_order(driver)
    # PIRender order is exp 64 | angle 3 | trans 3 | crop 3
    assert torch.equal(pir[:, :64], driver[:, 3:67])
    assert torch.equal(pir[:, 64:67], driver[:, 0:3])
    assert torch.equal(pir[:, 67:73], driver[:, 67:73])
    assert torch.equal(coeffs.to_driver_order(pir), driver)


def test_from_recon_picks_the_documented_ranges() -> None:
    rng = np.random.default_rng(0)
    coeff = rng.standard_normal((4, 257)).astype(np.float32)
    params = rng.standard_normal((4, 5)).astype(np.float32)
    out = coeffs.from_recon(coeff, params)
    assert out.shape == (4, 73)
    np.testing.assert_array_equal(out[:, 0:3], coeff[:, 224:227])
    np.testing.assert_array_equal(out[:, 3:67], coeff[:, 80:144])
    np.testing.assert_array_equal(out[:, 67:70], coeff[:, 254:257])
    np.testing.assert_array_equal(out[:, 70:73], params[:, 2:5])
