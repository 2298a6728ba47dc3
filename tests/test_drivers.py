"""Drivers: official layouts load strictly and compute what the official architectures compute.

The reference forward passes below are written from scratch (explicit LSTM gate
equations, LayerNorm and eval-mode BatchNorm formulas) from our reading of the
official models (SPEC section 4); the state dicts are built from the golden key
manifests with seeded random values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bench_plugins.drivers.models import RegularisedLSTM, VicoListener, VicoSpeaker
from bench_plugins.drivers.neural import EnsembleDriver, NeuralDriver, norm_to_json

from bench.checkpoints import load_checkpoint, save_checkpoint, strip_prefix
from bench.contracts import DriverBatch, NormStats
from bench.errors import ConfigError, InputError

LAYOUTS = {
    "lstm": ("megvii_speaker", RegularisedLSTM),
    "vico-speaker": ("vico_baseline_speaker", VicoSpeaker),
    "vico-listener": ("vico_baseline_listener", VicoListener),
}


# small models run fastest (and reproducibly) on one thread, above all on a busy CPU
pytestmark = pytest.mark.usefixtures("one_thread")


def official_state(golden: Path, layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random tensors with the official key names and shapes."""
    shapes = json.loads((golden / "state_dicts" / f"{layout}.json").read_text())
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(shape, generator=g) * 0.3
        else:
            state[key] = torch.randn(shape, generator=g) * 0.2
    return state


def stats(audio_dim: int = 45, seed: int = 1) -> NormStats:
    g = torch.Generator().manual_seed(seed)
    return NormStats(
        torch.randn(73, generator=g),
        torch.rand(73, generator=g) + 0.5,
        torch.randn(audio_dim, generator=g),
        torch.rand(audio_dim, generator=g) + 0.5,
    )


# ---- an independent reading of the official architectures --------------------------


def ref_lstm_dir(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, h: torch.Tensor, c: torch.Tensor, reverse: bool) -> torch.Tensor:
    """One direction of a bias-free LSTM layer, gates in PyTorch order (i, f, g, o)."""
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    out = [torch.empty(0)] * x.shape[1]
    for t in steps:
        gates = x[:, t] @ w_ih.T + h @ w_hh.T
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out[t] = h
    return torch.stack(out, dim=1)


def ref_lstm(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, layers: int, bidirectional: bool,
             h0: torch.Tensor | None = None, c0: torch.Tensor | None = None) -> torch.Tensor:
    hidden = sd[f"{prefix}weight_hh_l0"].shape[1]
    zeros = torch.zeros(x.shape[0], hidden, dtype=x.dtype)
    for layer in range(layers):
        h = zeros if h0 is None else h0[layer]
        c = zeros if c0 is None else c0[layer]
        fwd = ref_lstm_dir(x, sd[f"{prefix}weight_ih_l{layer}"], sd[f"{prefix}weight_hh_l{layer}"], h, c, False)
        if bidirectional:
            bwd = ref_lstm_dir(x, sd[f"{prefix}weight_ih_l{layer}_reverse"], sd[f"{prefix}weight_hh_l{layer}_reverse"], zeros, zeros, True)
            x = torch.cat([fwd, bwd], dim=-1)
        else:
            x = fwd
    return x


def ref_layernorm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def ref_megvii(sd: dict[str, torch.Tensor], audio: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    x = torch.cat([audio, init[:, None].repeat(1, audio.shape[1], 1)], dim=2)
    x = x @ sd["audio_to_face.fusion.0.weight"].T + sd["audio_to_face.fusion.0.bias"]
    x = (x - sd["audio_to_face.bn.running_mean"]) / torch.sqrt(sd["audio_to_face.bn.running_var"] + 1e-5)
    x = x * sd["audio_to_face.bn.weight"] + sd["audio_to_face.bn.bias"]
    x = ref_lstm(x, sd, "audio_to_face.lstm_layers.", 4, True)
    return x @ sd["dynam_3dmm_fc.weight"].T + sd["dynam_3dmm_fc.bias"] + init[:, None]


def ref_vico_speaker(sd: dict[str, torch.Tensor], audio: torch.Tensor) -> torch.Tensor:
    x = ref_layernorm(audio, sd["audio_to_face.layernorm.weight"], sd["audio_to_face.layernorm.bias"])
    x = torch.tanh(x @ sd["audio_to_face.fusion.0.weight"].T + sd["audio_to_face.fusion.0.bias"])
    x = ref_lstm(x, sd, "audio_to_face.lstm_layers.", 4, True)
    return x @ sd["dynam_3dmm_fc.weight"].T + sd["dynam_3dmm_fc.bias"]


def ref_vico_listener(sd: dict[str, torch.Tensor], audio: torch.Tensor, speaker: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    s = ref_layernorm(init, sd["fusion.layernorm_init.weight"], sd["fusion.layernorm_init.bias"])
    s = torch.tanh(s @ sd["fusion.get_initial_state.0.weight"].T + sd["fusion.get_initial_state.0.bias"])
    s = s @ sd["fusion.get_initial_state.2.weight"].T + sd["fusion.get_initial_state.2.bias"]  # (B, 384)
    b = init.shape[0]
    s = s.reshape(b, 2, 2, 96)  # (batch, h/c, layer, hidden)
    h0 = [s[:, 0, layer] for layer in range(2)]
    c0 = [s[:, 1, layer] for layer in range(2)]
    x = torch.cat([audio, speaker], dim=-1)
    x = ref_layernorm(x, sd["fusion.layernorm_driven.weight"], sd["fusion.layernorm_driven.bias"])
    x = torch.tanh(x @ sd["fusion.fusion.0.weight"].T + sd["fusion.fusion.0.bias"])
    x = ref_lstm(x, sd, "fusion.lstm_layers.", 2, False, torch.stack(h0), torch.stack(c0))
    return x @ sd["dynam_3dmm_fc.weight"].T + sd["dynam_3dmm_fc.bias"]


def _inputs(b: int = 2, t: int = 11, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 45, generator=g), torch.randn(b, 73, generator=g), torch.randn(b, t, 73, generator=g)


@pytest.mark.parametrize("arch", list(LAYOUTS))
def test_official_layout_loads_strictly_and_matches_reference(arch: str, golden: Path) -> None:
    layout, cls = LAYOUTS[arch]
    sd = official_state(golden, layout)
    model = cls().eval()
    model.load_state_dict(sd, strict=True)
    audio, init, speaker = _inputs()
    with torch.no_grad():
        ours = model(audio, init, speaker)
        if arch == "lstm":
            ref = ref_megvii(sd, audio, init)
        elif arch == "vico-speaker":
            ref = ref_vico_speaker(sd, audio)
        else:
            ref = ref_vico_listener(sd, audio, speaker, init)
    assert ours.shape == (2, 11, 73)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", list(LAYOUTS))
@pytest.mark.parametrize("prefix", ["", "module."])
def test_driver_loads_official_file_and_applies_alignment(arch: str, prefix: str, golden: Path, tmp_path: Path) -> None:
    """Raw features in; z-scored inside; frame 0 = init, frame t+1 = output step t; denormalised."""
    layout, _ = LAYOUTS[arch]
    sd = official_state(golden, layout, seed=5)
    path = tmp_path / "official.bin"
    torch.save({prefix + k: v for k, v in sd.items()}, path)  # no sidecar, like a released file
    st = stats()
    (tmp_path / "stats.json").write_text(json.dumps({"norm": norm_to_json(st)}))
    driver = NeuralDriver(arch, path, stats=tmp_path / "stats.json")
    audio, init, speaker = _inputs(seed=9)
    out = driver.predict(DriverBatch(audio=audio, init=init, speaker=speaker))

    za = (audio - st.audio_mean) / st.audio_std
    zi = (init - st.coeff_mean) / st.coeff_std
    zs = (speaker - st.coeff_mean) / st.coeff_std
    with torch.no_grad():
        if arch == "lstm":
            ref = ref_megvii(sd, za, zi)
        elif arch == "vico-speaker":
            ref = ref_vico_speaker(sd, za)
        else:
            ref = ref_vico_listener(sd, za, zs, zi)
    expected = torch.cat([init[:, None], ref[:, :-1] * st.coeff_std + st.coeff_mean], dim=1)
    assert out.shape == (2, 11, 73)
    torch.testing.assert_close(out[:, 0], init, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)


def test_official_file_without_stats_says_what_to_pass(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "official.bin"
    torch.save(official_state(golden, "megvii_speaker"), path)
    with pytest.raises(InputError, match="stats="):
        NeuralDriver("lstm", path)


def test_wrong_keys_and_shapes_are_listed_with_the_expected_layout(golden: Path, tmp_path: Path) -> None:
    sd = official_state(golden, "megvii_speaker")
    del sd["audio_to_face.bn.weight"]
    sd["audio_to_face.extra.weight"] = torch.zeros(3)
    sd["dynam_3dmm_fc.bias"] = torch.zeros(70)
    path = tmp_path / "bad.pt"
    save_checkpoint(path, sd, {"norm": norm_to_json(stats())})
    with pytest.raises(InputError) as info:
        NeuralDriver("lstm", path)
    msg = str(info.value)
    assert "megvii_speaker" in msg
    assert "missing keys (1): audio_to_face.bn.weight" in msg
    assert "unexpected keys (1): audio_to_face.extra.weight" in msg
    assert "dynam_3dmm_fc.bias: checkpoint (70,) vs model (73,)" in msg
    assert str(path) in msg


def test_speaker_checkpoint_into_listener_names_listener_layout(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "speaker.pt"
    save_checkpoint(path, official_state(golden, "vico_baseline_speaker"), {"norm": norm_to_json(stats())})
    with pytest.raises(InputError, match="vico_baseline_listener") as info:
        NeuralDriver("vico-listener", path)
    assert "fusion.layernorm_init.weight" in str(info.value)


def _saved(tmp_path: Path, arch: str, audio_dim: int = 45, seed: int = 0, name: str = "m.pt") -> Path:
    torch.manual_seed(seed)
    from bench_plugins.drivers.neural import build_model

    model = build_model(arch, audio_dim)
    meta = {"model": {"arch": arch, "audio_dim": audio_dim, "options": {}}, "norm": norm_to_json(stats(audio_dim, seed))}
    return save_checkpoint(tmp_path / name, model.state_dict(), meta)


def test_feature_dimension_mismatch_is_caught_before_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = NeuralDriver("lstm", _saved(tmp_path, "lstm"))
    assert driver.audio_dim == 45

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not run")

    monkeypatch.setattr(driver.model, "forward", boom)
    batch = DriverBatch(audio=torch.zeros(1, 10, 43), init=torch.zeros(1, 73))
    with pytest.raises(ConfigError, match=r"45-dim audio features \(44.1 kHz audio\).*43-dim features \(16 kHz audio\)"):
        driver.predict(batch)
    with pytest.raises(ConfigError):
        driver.check_audio_dim(43)
    driver.check_audio_dim(45)


def test_checkpoint_trained_on_43_dim_features_runs_on_them(tmp_path: Path) -> None:
    driver = NeuralDriver("lstm", _saved(tmp_path, "lstm", audio_dim=43))
    out = driver.predict(DriverBatch(audio=torch.randn(1, 6, 43), init=torch.randn(1, 73)))
    assert out.shape == (1, 6, 73)


def test_wrong_arch_sidecar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--driver lstm-nobn"):
        NeuralDriver("lstm", _saved(tmp_path, "lstm-nobn"))


def test_ablation_layouts() -> None:
    from bench_plugins.drivers.neural import build_model

    full = set(build_model("lstm").state_dict())
    assert {k for k in full if ".bn." in k} == full - set(build_model("lstm-nobn").state_dict())
    assert set(build_model("lstm-nores").state_dict()) == full
    assert build_model("lstm-nodrop").audio_to_face.lstm_layers.dropout == 0.0
    # No residual: a zero network outputs zero instead of the first frame.
    m = build_model("lstm-nores").eval()
    for p in m.parameters():
        torch.nn.init.zeros_(p)
    init = torch.randn(1, 73)
    assert torch.count_nonzero(m(torch.randn(1, 4, 45), init)) == 0


def test_listener_attitude_option(golden: Path) -> None:
    sd = official_state(golden, "vico_baseline_listener")
    plain, with_att = VicoListener().eval(), VicoListener(attitude=True).eval()
    plain.load_state_dict(sd, strict=True)
    missing = with_att.load_state_dict(sd, strict=False)
    assert list(missing.missing_keys) == ["fusion.attitude_embedding.weight"]
    audio, init, speaker = _inputs()
    att = torch.tensor([0, 2])
    with torch.no_grad():
        # zero-initialised embedding: identical to the official model until trained
        torch.testing.assert_close(with_att(audio, init, speaker, att), plain(audio, init, speaker))
        with_att.fusion.attitude_embedding.weight[2] += 0.5
        a, b = with_att(audio, init, speaker, att), plain(audio, init, speaker)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_listener_residual_and_speaker_motion_keep_the_official_keys(golden: Path) -> None:
    """Both options add no parameters; each changes the forward pass exactly as documented."""
    sd = official_state(golden, "vico_baseline_listener")
    official = set(json.loads((golden / "state_dicts" / "vico_baseline_listener.json").read_text()))
    audio, init, speaker = _inputs()
    ref = ref_vico_listener(sd, audio, speaker, init)
    models = {}
    for options in ({"residual": True}, {"speaker_motion": True}, {"residual": True, "speaker_motion": True}):
        m = VicoListener(**options).eval()
        assert set(m.state_dict()) == official
        m.load_state_dict(sd, strict=True)
        models[tuple(options)] = m
    with torch.no_grad():
        # residual: the official output plus the (normalised) first frame at every step
        torch.testing.assert_close(models[("residual",)](audio, init, speaker), ref + init[:, None], rtol=1e-5, atol=1e-5)
        # speaker motion: the official model fed the speaker minus its first frame
        moved = ref_vico_listener(sd, audio, speaker - speaker[:, :1], init)
        torch.testing.assert_close(models[("speaker_motion",)](audio, init, speaker), moved, rtol=1e-5, atol=1e-5)
        # ... which makes it blind to a constant offset of the speaker (who is talking)
        torch.testing.assert_close(
            models[("speaker_motion",)](audio, init, speaker + torch.randn(2, 1, 73)), moved, rtol=1e-5, atol=1e-5
        )
        both = models[("residual", "speaker_motion")](audio, init, speaker)
    torch.testing.assert_close(both, moved + init[:, None], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(moved, ref)


def test_listener_options_are_rebuilt_from_the_sidecar(golden: Path, tmp_path: Path) -> None:
    """A checkpoint trained with residual/speaker_motion loads with them (official keys in the file)."""
    sd = official_state(golden, "vico_baseline_listener")
    norm = stats()
    options = {"residual": True, "speaker_motion": True}
    path = tmp_path / "l.pt"
    save_checkpoint(path, sd, {"model": {"arch": "vico-listener", "audio_dim": 45, "options": options}, "norm": norm_to_json(norm)})
    driver = NeuralDriver("vico-listener", path)
    assert driver.model.residual and driver.model.speaker_motion
    audio, init, speaker = _inputs(seed=5)
    raw = DriverBatch(
        audio=audio * norm.audio_std + norm.audio_mean,
        init=init * norm.coeff_std + norm.coeff_mean,
        speaker=speaker * norm.coeff_std + norm.coeff_mean,
    )
    expected = ref_vico_listener(sd, audio, speaker - speaker[:, :1], init) + init[:, None]
    # frame 0 is the given first frame; frame t+1 is step t's output
    z = torch.cat([init[:, None], expected[:, :-1]], dim=1)
    torch.testing.assert_close(driver.predict(raw), z * norm.coeff_std + norm.coeff_mean, rtol=1e-4, atol=1e-4)


def test_listener_is_causal() -> None:
    m = VicoListener().eval()
    audio, init, speaker = _inputs(t=12)
    audio2, speaker2 = audio.clone(), speaker.clone()
    audio2[:, 7:] += 5
    speaker2[:, 7:] -= 5
    with torch.no_grad():
        a, b = m(audio, init, speaker), m(audio2, init, speaker2)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_ensemble_is_the_mean_in_normalised_space(tmp_path: Path) -> None:
    paths = [_saved(tmp_path, "lstm", seed=s, name=f"m{s}.pt") for s in (1, 2, 3)]
    drivers = [NeuralDriver("lstm", p) for p in paths]
    batch = DriverBatch(audio=torch.randn(2, 9, 45), init=torch.randn(2, 73))
    ens = EnsembleDriver(members=drivers)
    ref = drivers[0].norm
    z = torch.stack([(d.predict(batch) - ref.coeff_mean) / ref.coeff_std for d in drivers]).mean(0)
    torch.testing.assert_close(ens.predict(batch), z * ref.coeff_std + ref.coeff_mean)
    # built from files: same result
    torch.testing.assert_close(EnsembleDriver(checkpoints=paths).predict(batch), ens.predict(batch))
    assert len(list(ens.model.parameters())) == 3 * len(list(drivers[0].model.parameters()))


def test_ensemble_of_any_drivers_by_name() -> None:
    import bench

    ens = bench.load("driver", "ensemble:static,gt")
    init = torch.randn(1, 73)
    gt = torch.randn(1, 5, 73)
    out = ens.predict(DriverBatch(audio=torch.zeros(1, 5, 45), init=init, gt=gt))
    torch.testing.assert_close(out, (gt + init[:, None]) / 2)
    assert ens.tasks == frozenset({"talking", "listening"})


def test_ensemble_refuses_members_without_common_task(tmp_path: Path) -> None:
    speaker = NeuralDriver("lstm", _saved(tmp_path, "lstm"))
    listener = NeuralDriver("vico-listener", _saved(tmp_path, "vico-listener", name="l.pt"))
    with pytest.raises(ConfigError, match="no common task"):
        EnsembleDriver(members=[speaker, listener])


def test_registered_names_and_checkpoint_option(tmp_path: Path) -> None:
    import bench

    names = {e.name for e in bench.available("driver")}
    assert {"lstm", "lstm-nobn", "lstm-nores", "lstm-nodrop", "vico-speaker", "vico-listener",
            "ensemble", "lstm-self3", "lstm-ens5", "listener-ens3", "static", "gt"} <= names
    path = _saved(tmp_path, "lstm")
    driver = bench.load("driver", f"lstm:{path}")
    assert isinstance(driver.model, torch.nn.Module) and driver.tasks == frozenset({"talking"})
    ens = bench.load("driver", "lstm-ens5", checkpoints=[path, path])
    assert len(ens.members) == 2


def test_checkpoint_roundtrip_fp16_and_prefix(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(3, 4), "n": torch.tensor(3)}
    path = save_checkpoint(tmp_path / "x.pt", sd, {"k": 1}, dtype=torch.float16)
    state, meta = load_checkpoint(path)
    assert state["a.weight"].dtype == torch.float32 and meta["k"] == 1 and meta["stored_dtype"] == "float16"
    torch.testing.assert_close(state["a.weight"], sd["a.weight"].half().float())
    assert strip_prefix({"module.a": 1, "b": 2, "x.module.c": 3}) == {"a": 1, "b": 2, "x.module.c": 3}


SHIPPED = ["lstm", "lstm-nobn", "lstm-nores", "lstm-nodrop", "lstm-self3", "lstm-ens5", "vico-listener", "listener-ens3"]


def test_shipped_checkpoints_load_by_default() -> None:
    """`bench run --driver lstm-ens5` on a fresh machine: the package data is enough."""
    from bench_plugins.drivers.shipped import shipped_manifest

    import bench

    manifest = shipped_manifest()
    if not manifest:
        pytest.skip("no shipped checkpoints in this checkout")
    assert set(SHIPPED) <= set(manifest["drivers"])
    ens = bench.load("driver", "lstm-ens5")
    assert len(ens.members) == 5 and all(m.audio_dim == 45 for m in ens.members)
    assert len(bench.load("driver", "lstm-self3").members) == 3
    listener = bench.load("driver", "vico-listener")
    out = listener.predict(DriverBatch(audio=torch.randn(1, 8, 45), init=torch.randn(1, 73), speaker=torch.randn(1, 8, 73)))
    assert out.shape == (1, 8, 73) and torch.isfinite(out).all()
    for name in SHIPPED:
        entry = next(e for e in bench.available("driver") if e.name == name)
        status = entry.weights_status()
        assert status is not None and status.present, name
        assert manifest["drivers"][name]["command"].startswith(f"bench train --driver {name} --dataset vico-mini")
