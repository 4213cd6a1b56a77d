"""Collator against the installed MusicGen, sampler sharding and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import fake_rows, tiny_tokenizer

from lab.data.loader import (
    MusicgenCollator,
    ResumableSampler,
    iterate_batches,
    make_loader,
    model_inputs,
    steps_per_epoch,
)

P = 64  # pad/start token of a codebook_size-64 decoder
M = -100


def test_collator_labels_and_decoder_inputs_hand_computed():
    rows = [
        {
            "recording_id": "r1",
            "segment": 0,
            "seconds": 0.5,
            "frames": 2,
            "description": "warm piano",
            "codes": np.array([[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]], dtype=np.int16),
        }
    ]
    batch = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)(rows)
    assert batch["codes"].dtype == torch.long and batch["codes"].shape == (1, 4, 3)
    assert batch["labels"].shape == (1, 6, 4)
    assert batch["labels"][0].T.tolist() == [
        [0, 1, M, M, M, M],
        [M, 10, 11, M, M, M],
        [M, M, 20, 21, M, M],
        [M, M, M, 30, 31, M],
    ]
    assert batch["decoder_input_ids"].shape == (4, 6)
    assert batch["decoder_input_ids"].tolist() == [
        [P, 0, 1, P, P, P],
        [P, P, 10, 11, P, P],
        [P, P, P, 20, 21, P],
        [P, P, P, P, 30, 31],
    ]
    assert batch["recording_ids"] == ["r1"] and batch["seconds"] == [0.5] and isinstance(batch["seconds"], list)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 1
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}


def _tiny_musicgen():
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    torch.manual_seed(0)
    text = T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    audio = EncodecConfig(
        sampling_rate=8000,
        num_filters=4,
        upsampling_ratios=[8, 5],
        codebook_size=64,
        codebook_dim=16,
        hidden_size=16,
        num_lstm_layers=1,
        target_bandwidths=[4.8],
    )
    dec = MusicgenDecoderConfig(
        vocab_size=64,
        max_position_embeddings=64,
        num_hidden_layers=1,
        ffn_dim=32,
        num_attention_heads=2,
        hidden_size=16,
        num_codebooks=4,
        pad_token_id=P,
        bos_token_id=P,
        dropout=0.0,
    )
    cfg = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=dec)
    cfg.decoder_start_token_id = P
    cfg.pad_token_id = P
    cfg.decoder.decoder_start_token_id = P
    return MusicgenForConditionalGeneration(cfg).eval()


def test_batch_matches_installed_musicgen_forward():
    """Our decoder_input_ids are exactly what the model derives from labels, and the model takes them."""
    from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

    rows = fake_rows(3, k=4, t=6)
    batch = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)(rows)
    b, s, k = batch["labels"].shape
    assert (b, s, k) == (3, 6 + 4 - 1, 4)
    shifted = shift_tokens_right(batch["labels"], P, P)  # (B, K, S)
    assert torch.equal(shifted.reshape(b * k, s), batch["decoder_input_ids"])

    model = _tiny_musicgen()
    with torch.no_grad():
        out = model(**model_inputs(batch))
        out_labels_only = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
    assert out.logits.shape == (b * k, s, 64)
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, out_labels_only.loss)


def _ids(batches):
    return [[(r, s) for r, s in zip(b["recording_ids"], b["segments"])] for b in batches]


def test_two_ranks_disjoint_complete_shards():
    for n in (12, 11):
        samplers = [ResumableSampler(n, seed=3, rank=r, world_size=2, drop_last=True) for r in range(2)]
        shards = [list(s) for s in samplers]
        assert not set(shards[0]) & set(shards[1])
        assert len(shards[0]) == len(shards[1]) == n // 2
        assert sorted(shards[0] + shards[1]) == sorted(samplers[0].epoch_order(0))
        if n % 2 == 0:
            assert sorted(shards[0] + shards[1]) == list(range(n))
    # padding (the default) covers every item; the single repeat is visible and metered
    pad = [list(ResumableSampler(11, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert set(pad[0]) | set(pad[1]) == set(range(11)) and len(pad[0]) == len(pad[1]) == 6
    # every epoch a new order; same seed, same order
    s = ResumableSampler(12, seed=3)
    e0, e1 = list(s), list(s)
    assert sorted(e0) == sorted(e1) == list(range(12)) and e0 != e1
    assert list(ResumableSampler(12, seed=3)) == e0


def test_loader_ranks_cover_dataset_once():
    rows = fake_rows(20)
    col = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)
    seen = []
    for rank in range(2):
        for batch in make_loader(rows, col, 3, seed=7, rank=rank, world_size=2):
            seen += list(zip(batch["recording_ids"], batch["segments"]))
    assert sorted(seen) == sorted((r["recording_id"], r["segment"]) for r in rows)


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_at_step_gives_identical_batches(world_size):
    rows = fake_rows(23)
    col = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)
    spe = steps_per_epoch(len(rows), 4, world_size=world_size)
    total = 3 * spe + 2
    for rank in range(world_size):
        kw = dict(seed=11, rank=rank, world_size=world_size)
        full = []
        for epoch, step, batch in iterate_batches(rows, col, 4, **kw):
            assert step == len(full) and epoch == step // spe
            full.append(batch)
            if len(full) == total:
                break
        for start in (1, spe - 1, spe, spe + 2, 2 * spe + 1):
            resumed = []
            for _epoch, step, batch in iterate_batches(rows, col, 4, start_step=start, **kw):
                assert step == start + len(resumed)
                resumed.append(batch)
                if step == total - 1:
                    break
            assert _ids(resumed) == _ids(full[start:])
            assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(resumed, full[start:]))


def test_sampler_state_dict_round_trip_mid_epoch():
    rows = fake_rows(17)
    col = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)
    ref = make_loader(rows, col, 3, seed=5)
    expect = _ids(list(ref)) + _ids(list(ref))  # two epochs (the sampler advances itself)

    loader = make_loader(rows, col, 3, seed=5)
    it = iter(loader)
    first = [next(it) for _ in range(4)]
    state = loader.sampler.state_dict()
    assert state["epoch"] == 0 and state["position"] == 12

    again = make_loader(rows, col, 3, seed=5)
    again.sampler.load_state_dict(state)
    again.sampler.set_epoch(0)  # a trainer calling set_epoch as usual keeps the position
    rest = list(again)
    assert again.sampler.state_dict()["epoch"] == 1
    assert _ids(first) + _ids(rest) + _ids(list(again)) == expect

    with pytest.raises(ValueError, match="seed"):
        make_loader(rows, col, 3, seed=6).sampler.load_state_dict(state)


def test_loader_over_code_cache_dataset(tmp_path):
    from data_helpers import make_snapshot, tiny_codec

    from lab.data.codes import build_code_cache

    ds = build_code_cache(make_snapshot(tmp_path / "cat"), tiny_codec(), tmp_path / "cache", segment_seconds=1.0)
    col = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)
    batches = list(make_loader(ds, col, 3, seed=0))
    assert [b["codes"].shape for b in batches] == [(3, 4, 200), (1, 4, 200)]
    rows = sorted(zip(sum((b["recording_ids"] for b in batches), []), sum((b["seconds"] for b in batches), [])))
    assert rows == [("rec-a", 0.6), ("rec-a", 1.0), ("rec-a", 1.0), ("rec-b", 1.0)]
    # the padded segment (0.6 s → 120 of 200 frames) has its padding frames masked out of the loss
    for b in batches:
        for i, sec in enumerate(b["seconds"]):
            valid = (b["labels"][i] != -100).sum(0)  # per codebook
            assert valid.tolist() == [120 if sec < 1 else 200] * 4


def test_layout_matches_generation_delay_pattern():
    """At generate time MusicGen starts from an all-start column and applies build_delay_pattern_mask;
    teacher forcing must present the same layout."""
    model = _tiny_musicgen()
    rows = fake_rows(2, k=4, t=5)
    for r in rows:
        r["frames"] = 5
    batch = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)(rows)
    codes = batch["codes"]  # (B, K, T)
    b, k, t = codes.shape
    prompt = torch.cat([torch.full((b, k, 1), P), codes], dim=-1).reshape(b * k, t + 1)
    _, pattern = model.decoder.build_delay_pattern_mask(prompt, pad_token_id=P, max_length=t + k)
    assert torch.equal(pattern[:, : t + k - 1], batch["decoder_input_ids"])


# --------------------------------------------------------------------------- consent: Admission


def _clock(t):
    from datetime import datetime, timezone

    return lambda: datetime.fromtimestamp(t[0], timezone.utc)


def test_admission_drops_rows_at_their_deadline_and_excluded_ones():
    from datetime import datetime, timezone

    from lab.data.loader import Admission

    t = [100.0]
    adm = Admission({"a": datetime.fromtimestamp(105, timezone.utc)}, clock=_clock(t))
    assert adm.keep(["a", "b"]) is None  # before any deadline, nothing excluded: no per-row work
    t[0] = 105.0
    assert adm.keep(["a", "b", "a"]) == [False, True, False]  # at the deadline it is already too late
    assert adm.expired == {"a": 105.0}
    adm.exclude(["b"])
    assert adm.keep(["b", "c"]) == [False, True]
    assert adm.tighten("c", datetime.fromtimestamp(104, timezone.utc)) and not adm.tighten(
        "c", datetime.fromtimestamp(200, timezone.utc)
    )
    assert adm.keep(["c"]) == [False]


def test_admission_from_snapshot_takes_the_earliest_grant_end():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    import pyarrow as pa

    from lab.data.loader import Admission

    ts = pa.timestamp("us", tz="UTC")
    early, late = datetime(2030, 1, 1, tzinfo=timezone.utc), datetime(2031, 1, 1, tzinfo=timezone.utc)
    snap = SimpleNamespace(
        items=pa.table(
            {"recording_id": ["r1", "r2", "r3"], "grant_ids": [["g-late", "g-early"], ["g-open"], ["g-open", "g-late"]]}
        ),
        grants=pa.table(
            {"grant_id": ["g-early", "g-late", "g-open"], "valid_until": pa.array([early, late, None], ts)}
        ),
    )
    adm = Admission.from_snapshot(snap)
    assert adm.deadlines == {"r1": early.timestamp(), "r3": late.timestamp()}


def test_admission_filters_skips_empty_draws_and_resumes_exactly():
    from lab.data.loader import Admission, NothingAdmitted

    rows = fake_rows(23)
    col = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=P)
    plain = [b for _, (_, _, b) in zip(range(12), iterate_batches(rows, col, 2, seed=3))]
    # rec-0 and rec-1 excluded from the start: their rows vanish, the others keep their places
    adm = Admission(excluded={"rec-0", "rec-1"})
    it = iterate_batches(rows, col, 2, seed=3, admission=adm)
    got = [b for _, (_, _, b) in zip(range(8), it)]
    want = [[r for r in b["recording_ids"] if r not in ("rec-0", "rec-1")] for b in plain]
    draws = len(got) + adm.skipped
    assert [b["recording_ids"] for b in got] == [w for w in want[:draws] if w]
    assert adm.skipped == sum(1 for w in want[:draws] if not w) > 0  # some draws held only excluded rows
    # resume from (batches yielded + skipped draws): the same batches follow
    nxt = next(it)[2]
    again = Admission(excluded={"rec-0", "rec-1"})
    again.load_state_dict({**adm.state_dict(), "skipped": adm.skipped})
    resumed = next(iterate_batches(rows, col, 2, seed=3, admission=again, start_step=draws))[2]
    assert resumed["recording_ids"] == nxt["recording_ids"]
    # nothing left to draw: a clear error instead of a silent endless loop
    none = Admission(excluded={f"rec-{i}" for i in range(5)})
    with pytest.raises(NothingAdmitted, match="nothing left to train on"):
        next(iterate_batches(rows, col, 2, seed=3, admission=none))
