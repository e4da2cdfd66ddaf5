"""Filter index and chunked filtered ranking against brute force on small random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bigkg.config import config_from_dict
from bigkg.evaluation.counting import _compiled_applies, count_above_and_tied
from bigkg.evaluation.evaluate import ranking_options
from bigkg.evaluation.filters import FilterIndex, KeyedSets, QueryKeys, Triples, filter_stride, read_split
from bigkg.evaluation.metrics import ranking_metrics
from bigkg.evaluation.ranking import (CPU_BLOCK_SCORES, GPU_CANDIDATE_CHUNK, MIN_CPU_CHUNK, MaskedCandidates,
                                     NonFiniteScoreError, RankingOptions, candidate_chunk, gather, rank_queries, top_k)
from bigkg.format import load_manifest
from eval_datasets import TensorSource, write_dataset


def diag_score(rel_vecs: torch.Tensor):
    def scorer(side, anchors, rels):
        operated = anchors * rel_vecs[rels]
        return lambda cands: operated @ cands.transpose(-1, -2)  # the same for both sides

    return scorer


def test_keyed_sets_lookup_matches_python_sets():
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 30, 400)
    values = rng.integers(0, 50, 400)
    ks = KeyedSets.build(keys, values)
    expected: dict[int, set[int]] = {}
    for k, v in zip(keys, values):
        expected.setdefault(int(k), set()).add(int(v))
    queries = np.array([0, 5, 5, 29, 31, -1, 12])
    qidx, vals = ks.lookup(queries)
    for pos, q in enumerate(queries):
        got = vals[qidx == pos]
        assert list(got) == sorted(expected.get(int(q), set()))
    assert len(ks) == sum(len(s) for s in expected.values())  # duplicates dropped


def test_keyed_sets_empty():
    ks = KeyedSets.build(np.empty(0), np.empty(0))
    qidx, vals = ks.lookup(np.array([3, 4]))
    assert qidx.size == 0 and vals.size == 0


def _random_kg(tmp_path, seed=0, n_ent=40, n_rel=3, parts=3):
    rng = np.random.default_rng(seed)

    def triples(n):
        return np.stack([rng.integers(0, n_ent, n), rng.integers(0, n_rel, n), rng.integers(0, n_ent, n)], 1)

    splits = {"train": triples(300), "valid": triples(40), "test": triples(60)}
    gid = write_dataset(tmp_path, {"ent": n_ent}, [(f"r{k}", "ent", "ent") for k in range(n_rel)], splits, parts, seed)
    return splits, gid["ent"]


def test_read_split_maps_to_global_ids(tmp_path):
    splits, gid = _random_kg(tmp_path)
    manifest = load_manifest(tmp_path)
    got = read_split(tmp_path, manifest, "test")
    exp = splits["test"]
    got_set = sorted(zip(got.heads.tolist(), got.rels.tolist(), got.tails.tolist()))
    exp_set = sorted(zip(gid[exp[:, 0]].tolist(), exp[:, 1].tolist(), gid[exp[:, 2]].tolist()))
    assert got_set == exp_set


def _brute_force_ranks(scores_all, triples, known, side):
    """scores_all(h, r) -> scores of all candidates; rank each triple with other known answers
    removed. Returns the ranks and the number of candidates of each: the entities that are not
    another known answer (the answer among them)."""
    ranks, candidates = [], []
    for h, r, t in triples:
        anchor, answer = (h, t) if side == "rhs" else (t, h)
        s = scores_all(anchor, r).copy()
        true = s[answer]
        others = [x for x in known[(anchor, r)] if x != answer]
        s[others] = -np.inf
        s[answer] = -np.inf  # the answer itself is the reference, not a competitor
        ranks.append(1 + (s > true).sum() + (s == true).sum() / 2)
        candidates.append(len(s) - len(others))
    return np.array(ranks), np.array(candidates)


@pytest.mark.parametrize("chunk,batch", [(7, 5), (1000, 1000)])
def test_filtered_ranks_match_brute_force_with_ties(tmp_path, chunk, batch):
    splits, gid = _random_kg(tmp_path)
    manifest = load_manifest(tmp_path)
    filters = FilterIndex.from_dataset(tmp_path, manifest)
    test = read_split(tmp_path, manifest, "test")
    n = manifest.entity_type("ent").count
    g = torch.Generator().manual_seed(0)
    # Small integer vectors: exact float arithmetic, many ties.
    vectors = torch.randint(-1, 2, (n, 4), generator=g).float()
    rel_vecs = torch.randint(-1, 2, (3, 4), generator=g).float()
    offsets = {"ent": manifest.entity_type("ent").offsets}
    source = TensorSource({"ent": vectors}, offsets)
    score_fn = diag_score(rel_vecs)

    all_triples = np.concatenate([read_split(tmp_path, manifest, s) for s in ("train", "valid", "test")], 1).T
    known_t: dict = {}
    known_h: dict = {}
    for h, r, t in all_triples:
        known_t.setdefault((h, r), set()).add(t)
        known_h.setdefault((t, r), set()).add(h)

    def scores_all(anchor, r):
        return ((vectors[anchor] * rel_vecs[r]) @ vectors.T).numpy().astype(np.float64)

    opts = RankingOptions(query_batch=batch, candidate_chunk=chunk)
    test_triples = np.stack([test.heads, test.rels, test.tails], 1)
    for side, known in (("rhs", known_t), ("lhs", known_h)):
        anchors, answers = (test.heads, test.tails) if side == "rhs" else (test.tails, test.heads)
        got = rank_queries(side, anchors, test.rels, answers, "ent", "ent", source, score_fn, filters, opts)
        exp, candidates = _brute_force_ranks(scores_all, test_triples, known, side)
        np.testing.assert_allclose(got.ranks, exp)
        np.testing.assert_array_equal(got.candidates, candidates)
        assert np.any(got.ranks != np.floor(got.ranks)), "the data should contain ties"
        assert np.any(candidates < n - 1), "some queries should have other known answers filtered"


@pytest.mark.parametrize("known_tails", [[1, 2], [2]])
def test_hand_worked_example(known_tails):
    # 5 entities in 2 partitions; a candidate's score is its own value: [1, 1, 2, 2, 0].
    source = TensorSource({"ent": torch.tensor([[1.0], [1.0], [2.0], [2.0], [0.0]])}, {"ent": np.array([0, 2, 5])})
    score_fn = lambda side, a, r: lambda c: c.transpose(-1, -2).expand(*a.shape[:-1], -1)  # noqa: E731
    # Query (0, r0, ?) with answer 1 (score 1). Known tails of (0, r0): 2 is filtered; the answer
    # is the reference whether the filter lists it or not (a query outside the known triples).
    heads = np.zeros(len(known_tails), dtype=np.int64)
    filters = FilterIndex(Triples(heads, heads, np.array(known_tails)), stride=5)
    got = rank_queries("rhs", np.array([0]), np.array([0]), np.array([1]), "ent", "ent", source, score_fn,
                       filters, RankingOptions(candidate_chunk=2))
    # Competitors left: e0 (1, a tie), e3 (2, greater), e4 (0, lower) -> 1 + 1 + 1/2, among 4 with e1.
    assert got.ranks.tolist() == [2.5]
    assert got.candidates.tolist() == [4]


def test_sampled_mode_ranks_within_sample(tmp_path):
    splits, gid = _random_kg(tmp_path, n_ent=60)
    manifest = load_manifest(tmp_path)
    filters = FilterIndex.from_dataset(tmp_path, manifest)
    test = read_split(tmp_path, manifest, "test")
    n = manifest.entity_type("ent").count
    vectors = torch.randn(n, 8, generator=torch.Generator().manual_seed(3))
    offsets = {"ent": manifest.entity_type("ent").offsets}
    source = TensorSource({"ent": vectors}, offsets)
    score_fn = diag_score(torch.ones(3, 8))
    full = rank_queries("rhs", test.heads, test.rels, test.tails, "ent", "ent", source, score_fn, filters,
                        RankingOptions()).ranks
    got = rank_queries("rhs", test.heads, test.rels, test.tails, "ent", "ent", source, score_fn, filters,
                       RankingOptions(num_sampled=10, query_batch=16))
    sampled = got.ranks
    # A sample of <= 10 candidates can only lower the rank, and bounds it.
    assert np.all(sampled <= full) and np.all(sampled <= 11)
    assert sampled.mean() < full.mean()
    again = rank_queries("rhs", test.heads, test.rels, test.tails, "ent", "ent", source, score_fn, filters,
                         RankingOptions(num_sampled=10, query_batch=16))
    np.testing.assert_array_equal(sampled, again.ranks)  # seeded
    # Candidates: the answer and the batch's distinct draws (seed 0, in batch order) that are
    # not known answers of the query.
    rng = np.random.default_rng(0)
    known = known_sets(filters, "rhs", test.heads, test.rels)
    expected = []
    for start in range(0, len(test), 16):
        sample = set(np.unique(rng.integers(0, n, 10)).tolist())
        expected += [1 + len(sample - known[q] - {int(test.tails[q])}) for q in range(start, min(start + 16, len(test)))]
    np.testing.assert_array_equal(got.candidates, expected)
    assert np.all((1 <= sampled) & (sampled <= got.candidates))
    assert len(set(expected)) > 2  # samples and filters differ between queries


def _crowded_queries(seed: int, n_ent: int = 100, n_anchors: int = 50, n_rel: int = 2) -> Triples:
    """Every (anchor, relation) has 1 to 60 known tails, each one a query: the filter removes
    about 30 of 100 candidates per query, so candidate counts that ignored it would be far off."""
    rng = np.random.default_rng(seed)
    heads, rels, tails = [], [], []
    for a in range(n_anchors):
        for r in range(n_rel):
            answers = rng.choice(n_ent, size=int(rng.integers(1, 61)), replace=False)
            heads += [a] * answers.size
            rels += [r] * answers.size
            tails += answers.tolist()
    return Triples(np.array(heads), np.array(rels), np.array(tails))


def test_random_scores_give_adjusted_indices_near_zero_and_a_perfect_model_one():
    queries = _crowded_queries(seed=4, n_anchors=100)
    filters = FilterIndex(queries, stride=100)
    vectors = torch.randn(100, 16, generator=torch.Generator().manual_seed(4))
    source = TensorSource({"ent": vectors}, {"ent": np.array([0, 37, 100])})
    got = rank_queries("rhs", queries.heads, queries.rels, queries.tails, "ent", "ent", source,
                       diag_score(torch.randn(2, 16, generator=torch.Generator().manual_seed(5))), filters,
                       RankingOptions(query_batch=64, candidate_chunk=30))
    # The answers are drawn independently of the vectors: each rank is uniform over its candidates.
    m = ranking_metrics(got.ranks, got.candidates)
    assert len(queries) > 5000 and m["mr"] > 10
    assert abs(m["amri"]) < 0.05 and abs(m["amr"] - 1) < 0.05 and abs(m["amrri"]) < 0.05, m
    # Ranked among all 100 instead, the same ranks would look far better than random.
    assert ranking_metrics(got.ranks, np.full(len(queries), 100))["amri"] > 0.3

    # One-hot vectors and queries (e, r, e): each answer scores 1, every other candidate 0. The
    # filter seldom lists e: an answer that tied with itself would rank 1.5.
    selves = Triples(np.arange(100), np.zeros(100, dtype=np.int64), np.arange(100))
    perfect = rank_queries("rhs", selves.heads, selves.rels, selves.tails, "ent", "ent",
                           TensorSource({"ent": torch.eye(100)}, {"ent": np.array([0, 37, 100])}),
                           diag_score(torch.ones(1, 100)), FilterIndex(queries, stride=100), RankingOptions(query_batch=64))
    assert perfect.ranks.tolist() == [1.0] * 100
    m = ranking_metrics(perfect.ranks, perfect.candidates)
    assert m["amri"] == 1.0 and m["amrri"] == 1.0 and m["amr"] < 0.1


@pytest.mark.parametrize("num_sampled", [None, 20])
def test_sharded_ranks_and_candidates_add_up_to_the_unsplit_ones(num_sampled):
    queries = _crowded_queries(seed=6, n_anchors=10)
    filters = FilterIndex(queries, stride=100)
    source = TensorSource({"ent": torch.randn(100, 8, generator=torch.Generator().manual_seed(6))},
                          {"ent": np.array([0, 50, 100])})
    score_fn = diag_score(torch.ones(2, 8))

    def ranked(shard):
        return rank_queries("lhs", queries.tails, queries.rels, queries.heads, "ent", "ent", source, score_fn, filters,
                            RankingOptions(query_batch=9, candidate_chunk=13, num_sampled=num_sampled, shard=shard))

    whole, shares = ranked(None), [ranked((w, 3)) for w in range(3)]
    for share in shares:  # each worker left batches to the others, with rank and count 0
        assert ((share.ranks == 0) == (share.candidates == 0)).all() and (share.ranks == 0).any()
    np.testing.assert_array_equal(sum(share.ranks for share in shares), whole.ranks)
    np.testing.assert_array_equal(sum(share.candidates for share in shares), whole.candidates)


def test_each_partition_loaded_once_per_ranking(tmp_path):
    splits, gid = _random_kg(tmp_path, parts=4)
    manifest = load_manifest(tmp_path)
    test = read_split(tmp_path, manifest, "test")
    n = manifest.entity_type("ent").count
    offsets = {"ent": manifest.entity_type("ent").offsets}
    source = TensorSource({"ent": torch.randn(n, 4)}, offsets)
    rank_queries("rhs", test.heads, test.rels, test.tails, "ent", "ent", source, diag_score(torch.ones(3, 4)),
                 FilterIndex.from_dataset(tmp_path, manifest), RankingOptions(query_batch=7, candidate_chunk=5))
    # gather anchors (<= 4) + gather answers (<= 4) + one pass over the 4 partitions
    assert source.loads <= 12


def test_non_finite_scores_are_an_error(tmp_path):
    offsets = {"ent": np.array([0, 3])}
    source = TensorSource({"ent": torch.tensor([[1.0], [float("nan")], [0.0]])}, offsets)
    filters = FilterIndex(Triples(np.array([0]), np.array([0]), np.array([1])), stride=3)
    with pytest.raises(NonFiniteScoreError):
        rank_queries("rhs", np.array([0]), np.array([0]), np.array([1]), "ent", "ent", source,
                     diag_score(torch.ones(1, 1)), filters, RankingOptions())


def test_gather_across_partitions():
    offsets = {"ent": np.array([0, 2, 2, 5])}
    vectors = torch.arange(5.0).unsqueeze(1)
    got = gather(TensorSource({"ent": vectors}, offsets), "ent", np.array([4, 0, 3, 1, 4]))
    assert got.squeeze(1).tolist() == [4.0, 0.0, 3.0, 1.0, 4.0]


def test_top_k_excludes_and_orders():
    offsets = {"item": np.array([0, 3, 6]), "user": np.array([0, 2])}
    items = torch.tensor([[5.0], [1.0], [4.0], [3.0], [6.0], [2.0]])
    users = torch.tensor([[1.0], [-1.0]])
    source = TensorSource({"item": items, "user": users}, offsets)
    score_fn = lambda side, a, r: lambda c: a @ c.transpose(-1, -2)  # noqa: E731
    exclude = (np.array([0, 1]), np.array([4, 5]))  # user 0 already has item 4, user 1 item 5
    ids, scores = top_k("rhs", np.array([0, 1]), np.array([0, 0]), "user", "item", source, score_fn, 3,
                        RankingOptions(candidate_chunk=2), exclude)
    assert ids.tolist() == [[0, 2, 3], [1, 3, 2]]
    assert scores.tolist() == [[5.0, 4.0, 3.0], [-1.0, -3.0, -4.0]]


def test_top_k_within_candidate_subset():
    offsets = {"item": np.array([0, 3, 6]), "user": np.array([0, 1])}
    items = torch.tensor([[5.0], [1.0], [4.0], [3.0], [6.0], [2.0]])
    source = TensorSource({"item": items, "user": torch.tensor([[1.0]])}, offsets)
    score_fn = lambda side, a, r: lambda c: a @ c.transpose(-1, -2)  # noqa: E731
    ids, _ = top_k("rhs", np.array([0]), np.array([0]), "user", "item", source, score_fn, 5,
                   RankingOptions(candidate_chunk=2), candidates=np.array([1, 3, 5]))
    assert ids.tolist() == [[3, 5, 1]]  # k capped at the 3 candidates


def test_score_blocks_bounded_by_batch_and_chunk_and_queries_prepared_once(tmp_path):
    splits, gid = _random_kg(tmp_path, parts=2)
    manifest = load_manifest(tmp_path)
    test = read_split(tmp_path, manifest, "test")
    n = manifest.entity_type("ent").count
    offsets = {"ent": manifest.entity_type("ent").offsets}
    source = TensorSource({"ent": torch.randn(n, 4)}, offsets)
    inner = diag_score(torch.ones(3, 4))
    shapes, prepared = [], []

    def recording(side, a, r):
        prepared.append(a.shape)
        scores_of = inner(side, a, r)

        def scores(c):
            out = scores_of(c)
            shapes.append(out.shape)
            return out

        return scores

    rank_queries("lhs", test.tails, test.rels, test.heads, "ent", "ent", source, recording,
                 FilterIndex.from_dataset(tmp_path, manifest), RankingOptions(query_batch=8, candidate_chunk=6))
    blocks = [s for s in shapes if len(s) == 2]
    assert blocks and max(s[0] for s in blocks) <= 8 and max(s[1] for s in blocks) <= 6
    # Candidates scored per query: every entity exactly once.
    assert sum(s[0] * s[1] for s in blocks) == len(test) * n
    # The queries are prepared (their relation operator applied) once for the answers' scores
    # and once per batch, not again for each of the 2 partitions or each chunk.
    assert len(prepared) == 1 + -(-len(test) // 8) and len(blocks) > len(prepared)


def known_sets(filters: FilterIndex, side: str, anchors: np.ndarray, rels: np.ndarray,
               part: int | None = None) -> list[set[int]]:
    position, answers = filters.known_answers(side, anchors, rels, part)
    sets: list[set[int]] = [set() for _ in anchors]
    for p, a in zip(position.tolist(), answers.tolist()):
        sets[p].add(a)
    return sets


def test_an_index_of_the_queries_answers_them_as_the_whole_index_does_with_a_fraction_of_it(codex2):
    """100 test triples of CoDEx-S: their keys pick under a third of the graph's triples (all
    1,828 pick 90% of this small, hub-heavy graph), and each query, either side, gets the
    same known answers as from every triple."""
    manifest = load_manifest(codex2)
    test = read_split(codex2, manifest, "test")
    queries = test.select(np.arange(len(test)) < 100)
    stride = filter_stride(manifest)
    full = FilterIndex.from_dataset(codex2, manifest)
    restricted = FilterIndex.for_queries(codex2, manifest, QueryKeys.of_triples(queries, stride))
    assert len(restricted.tails) < len(full.tails) / 3
    for side, anchors in (("rhs", queries.heads), ("lhs", queries.tails)):
        assert known_sets(restricted, side, anchors, queries.rels) == known_sets(full, side, anchors, queries.rels)
    one_side = FilterIndex.for_queries(codex2, manifest, QueryKeys.of_anchors("lhs", test.tails, test.rels, stride))
    assert known_sets(one_side, "lhs", test.tails, test.rels) == known_sets(full, "lhs", test.tails, test.rels)


def test_a_partitioned_index_gives_each_partition_its_own_answers(codex2):
    """CoDEx-S at P=2: asked for partition p, the index built with the manifest gives every
    known answer of the query that lies in p and nothing else, the same as one index of
    every answer cut down to p's global ids."""
    manifest = load_manifest(codex2)
    test = read_split(codex2, manifest, "test")
    everything = read_split(codex2, manifest, "train")
    stride = filter_stride(manifest)
    unsplit = FilterIndex(everything, stride)
    split = FilterIndex(everything, stride, manifest)
    offsets = manifest.entity_type(manifest.entity_types[0].name).offsets
    for side, anchors in (("rhs", test.heads), ("lhs", test.tails)):
        whole = known_sets(unsplit, side, anchors, test.rels)
        assert known_sets(split, side, anchors, test.rels) == whole
        for part in range(manifest.num_partitions):
            lo, hi = offsets[part], offsets[part + 1]
            expected = [{a for a in answers if lo <= a < hi} for answers in whole]
            assert known_sets(split, side, anchors, test.rels, part) == expected
            assert any(expected), "each partition holds some answers"


def test_a_zero_candidate_chunk_sizes_the_score_block_for_the_device():
    """eval.candidate_chunk 0 (the default): on the CPU, blocks of CPU_BLOCK_SCORES scores
    (never under MIN_CPU_CHUNK candidates); on a GPU, GPU_CANDIDATE_CHUNK; a set value is kept."""
    assert candidate_chunk(0, 1024, "cpu") * 1024 == CPU_BLOCK_SCORES
    assert candidate_chunk(0, 256, "cpu") * 256 == CPU_BLOCK_SCORES
    assert candidate_chunk(0, 1 << 30, "cpu") == MIN_CPU_CHUNK
    assert candidate_chunk(0, 1024, "cuda:0") == GPU_CANDIDATE_CHUNK
    assert candidate_chunk(300, 1024, "cpu") == candidate_chunk(300, 1024, "cuda") == 300
    config = config_from_dict({"eval": {"query_batch": 512}})
    assert ranking_options(config, "cpu").candidate_chunk == CPU_BLOCK_SCORES // 512
    assert ranking_options(config, "cuda").candidate_chunk == GPU_CANDIDATE_CHUNK


def test_compiled_and_torch_counts_agree_with_numpy():
    """count_above_and_tied adds each row's above and tied counts: the compiled CPU pass and
    the torch path (taken for a strided view) both match numpy, with ties, -inf (masked
    candidates) and NaN (neither above nor tied), and add to what the counters hold."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (37, 203), generator=g).float()  # many ties
    scores[torch.rand(scores.shape, generator=g) < 0.1] = float("-inf")
    scores[3, :7] = float("nan")
    answers = torch.randint(0, 5, (37,), generator=g).float()
    answers[5] = float("-inf")
    s, a = scores.numpy(), answers.numpy()[:, None]
    expected_above, expected_tied = (s > a).sum(1) + 2, (s == a).sum(1) + 1
    wide = torch.zeros(37, 406)
    wide[:, ::2] = scores
    for block, compiled in ((scores, True), (wide[:, ::2], False)):
        greater, equal = torch.full((37,), 2, dtype=torch.int64), torch.ones(37, dtype=torch.int64)
        assert _compiled_applies(block, answers, greater, equal) == compiled
        count_above_and_tied(block, answers, greater, equal)
        np.testing.assert_array_equal(greater.numpy(), expected_above)
        np.testing.assert_array_equal(equal.numpy(), expected_tied)


@pytest.mark.parametrize("candidates", [np.arange(10, 40), np.array([2, 5, 6, 11, 17, 18, 30, 33, 41])],
                         ids=["range", "sample"])
@pytest.mark.parametrize("chunk_size", [4, 100], ids=["chunks", "one chunk"])
def test_masked_pairs_are_found_in_the_chunk_that_scores_them(candidates, chunk_size):
    """Every (query row, id) pair whose id is a candidate comes back from the chunk holding
    that id, at its position there; pairs of other ids from none."""
    rng = np.random.default_rng(1)
    pairs = (rng.integers(0, 6, 80), rng.integers(0, 45, 80))
    pairs = tuple(np.array(sorted(set(zip(*pairs)))).T)  # distinct, as the filter gives them
    masked = MaskedCandidates.among(pairs, candidates, chunk_size)
    found = set()
    for index, start in enumerate(range(0, candidates.size, chunk_size)):
        chunk = candidates[start : start + chunk_size]
        rows, positions = masked.chunk(index)
        found |= {(int(q), int(chunk[p])) for q, p in zip(rows, positions)}
    assert found == {(int(q), int(i)) for q, i in zip(*pairs) if i in set(candidates.tolist())}
    assert masked.per_query(6).sum() == len(found)
