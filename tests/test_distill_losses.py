"""Distillation losses on random tensors and on tiny BERT students/teachers."""

from __future__ import annotations

import math

import pytest
import torch

from clir_eval.distill.losses import (
    CombinedLoss,
    DistillBatch,
    KDLoss,
    LossOptions,
    Needs,
    OTLoss,
    build_loss,
    cosine_cost,
    encode_batch,
    info_nce_from_embeddings,
    kd_cosine_from_embeddings,
    kd_from_embeddings,
    match_dimensions,
    ot_from_cost,
    real_token_mask,
)
from clir_eval.models.sentence import SentenceEncoder

FOREIGN = ["paka alikaa kwenye mat", "habari za leo", "benki ya soko ni pesa na mto"]
ENGLISH = ["the cat sat on the mat", "news today", "the market bank is money and river"]


@pytest.fixture()
def pair(tiny_bert_dir, tiny_bert_dir_48):
    torch.manual_seed(0)
    return SentenceEncoder.from_pretrained(str(tiny_bert_dir)), SentenceEncoder.from_pretrained(str(tiny_bert_dir_48))


def _batch(student, teacher, foreign=FOREIGN, english=ENGLISH, with_student_target=False):
    return DistillBatch(
        source=student.tokenize(foreign, "query"),
        target=teacher.tokenize(english, "query"),
        student_target=student.tokenize(english, "query") if with_student_target else None,
    )


def test_ot_gradient_wrt_cost_is_plan():
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    mask_a = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    mask_b = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    loss, result = ot_from_cost(cost, mask_a, mask_b, epsilon=0.1, max_iter=5000, tol=1e-12)
    loss.backward()
    torch.testing.assert_close(cost.grad * 3, result.plan)  # loss is the mean over the 3 pairs
    assert float(cost.grad[1, 3:].abs().sum() + cost.grad[1, :, 2:].abs().sum()) == 0.0
    # <P, C> of each pair, by hand.
    expected = sum(float((result.plan[k] * cost[k].detach()).sum()) for k in range(3)) / 3
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-12)


def test_ot_masks_padding_and_special_tokens(pair):
    student, teacher = pair
    match_dimensions(student, teacher, seed=0)
    loss_fn = OTLoss(epsilon=0.1, max_iter=2000, tol=1e-7)
    batched = loss_fn(student, teacher, _batch(student, teacher))
    loss, result = loss_fn.transport(encode_batch(student, teacher, _batch(student, teacher), loss_fn.needs()))
    assert torch.equal(loss, batched)
    plan = result.plan
    src = student.tokenize(FOREIGN)
    special = src["special_tokens_mask"].bool() | ~src["attention_mask"].bool()
    assert float(plan[special].abs().sum()) == 0.0  # [CLS], [SEP], padding get no mass
    # Each pair alone (no padding at all) gives the same per-pair values: padding is invisible.
    singles = [float(loss_fn(student, teacher, _batch(student, teacher, [f], [e])).detach())
               for f, e in zip(FOREIGN, ENGLISH)]
    assert math.isclose(float(batched.detach()), sum(singles) / len(singles), rel_tol=1e-5)
    # With include_special, [CLS] and [SEP] carry mass.
    with_special = OTLoss(epsilon=0.1, max_iter=2000, tol=1e-7, include_special=True)
    _, result = with_special.transport(encode_batch(student, teacher, _batch(student, teacher), loss_fn.needs()))
    assert float(result.plan[:, 0].sum()) > 0


def test_real_token_mask_keeps_something_for_empty_sentences():
    outputs = {"attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
               "special_tokens_mask": torch.tensor([[1, 1, 1], [1, 0, 1]])}
    mask = real_token_mask(outputs, include_special=False)
    assert mask.tolist() == [[True, True, False], [False, True, False]]


def test_projection_when_hidden_sizes_differ(pair, tmp_path):
    student, teacher = pair  # 32 -> 48
    assert student.hidden_size == 32 and teacher.dim == 48
    with pytest.raises(ValueError, match="projection"):
        KDLoss()(student, teacher, _batch(student, teacher))
    assert match_dimensions(student, teacher, seed=0)
    assert student.dim == 48
    for method in ("kd", "ot", "contrastive", "kd+ot"):
        student.zero_grad()
        loss = build_loss(method, LossOptions(ot_epsilon=0.1))(student, teacher, _batch(student, teacher))
        loss.backward()
        assert student.projection.weight.grad is not None and float(student.projection.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    student.save(tmp_path / "s")
    assert SentenceEncoder.from_pretrained(str(tmp_path / "s")).dim == 48


def test_kd_and_contrastive_math():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    assert math.isclose(float(kd_from_embeddings(s, t)), float(((s - t) ** 2).sum() / 24), rel_tol=1e-6)
    sn, tn = torch.nn.functional.normalize(s, dim=1), torch.nn.functional.normalize(t, dim=1)
    logits = sn @ tn.T / 0.1
    expected = -sum(float(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(4)) / 4
    assert math.isclose(float(info_nce_from_embeddings(s, t, 0.1)), expected, rel_tol=1e-5)
    # Perfectly aligned, well-separated pairs have a near-zero contrastive loss.
    eye = torch.eye(4)
    assert float(info_nce_from_embeddings(eye, eye, 0.01)) < 1e-6
    x = torch.rand(2, 3, 5)
    torch.testing.assert_close(cosine_cost(x, x).diagonal(dim1=1, dim2=2), torch.zeros(2, 3), atol=1e-6, rtol=0)


@torch.no_grad()
def test_kd_english_through_student(tiny_bert_dir):
    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    teacher = SentenceEncoder.from_pretrained(str(tiny_bert_dir))  # a copy of the teacher as student
    plain = float(KDLoss()(student, teacher, _batch(student, teacher, with_student_target=True)))
    both = float(KDLoss(english_through_student=True)(student, teacher, _batch(student, teacher,
                                                                                with_student_target=True)))
    # student == teacher, so the English->English term is 0 and the two agree.
    assert math.isclose(plain, both, rel_tol=1e-6) and plain > 0
    with pytest.raises(ValueError, match="student_target"):
        KDLoss(english_through_student=True)(student, teacher, _batch(student, teacher))


@torch.no_grad()
def test_combined_is_weighted_sum_and_teacher_outputs_can_be_precomputed(pair):
    student, teacher = pair
    match_dimensions(student, teacher)
    options = LossOptions(ot_epsilon=0.1, ot_weight=0.5, ot_tol=1e-7, ot_max_iter=2000)
    combined = build_loss("kd+ot", options)
    assert isinstance(combined, CombinedLoss) and combined.name == "kd+ot"
    batch = _batch(student, teacher)
    value = float(combined(student, teacher, batch))
    kd = float(build_loss("kd", options)(student, teacher, batch))
    ot = float(build_loss("ot", options)(student, teacher, batch))
    assert math.isclose(value, kd + 0.5 * ot, rel_tol=1e-5)
    with torch.no_grad():
        precomputed = teacher(batch.target)
    batch.teacher_outputs = precomputed
    assert math.isclose(float(combined(student, teacher, batch)), value, rel_tol=1e-6)


def test_names_and_options_are_validated():
    with pytest.raises(ValueError, match="valid methods.*kd\\+ot"):
        build_loss("kd-ot")
    with pytest.raises(ValueError, match="valid options"):
        LossOptions.from_dict({"ot_eps": 0.1})
    with pytest.raises(ValueError, match="ot_epsilon"):
        LossOptions(ot_epsilon=0)
    with pytest.raises(ValueError, match="repeat"):
        CombinedLoss([(OTLoss(student_layer=1), 1.0), (OTLoss(student_layer=2), 1.0)])


def test_kd_english_through_student_adds_the_english_term(tiny_bert_dir, tiny_bert_dir_48):
    """With English through the student, KD adds MSE(student(English), teacher(English)): non-zero for a student
    that differs from the teacher."""
    from clir_eval.distill.losses import DistillBatch, KDLoss, kd_from_embeddings, match_dimensions
    from clir_eval.models.sentence import SentenceEncoder

    teacher = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir_48))
    match_dimensions(student, teacher)
    foreign, english = ["paka leo", "pesa benki"], ["cat today", "money bank"]
    batch = DistillBatch(source=student.tokenize(foreign), target=teacher.tokenize(english),
                         student_target=student.tokenize(english))
    with torch.no_grad():
        plain = KDLoss(english_through_student=False)(student, teacher, batch)
        both = KDLoss(english_through_student=True)(student, teacher, batch)
        term = kd_from_embeddings(student(student.tokenize(english))["sentence_embedding"],
                                  teacher(teacher.tokenize(english))["sentence_embedding"])
    assert float(term) > 1e-4
    torch.testing.assert_close(both - plain, term)


def test_squared_euclidean_ot_bounds_the_pooled_distance():
    """<P, C> with C = |x_i - y_j|^2 / s and uniform marginals is at least |mean x - mean y|^2 / s (Jensen): the
    token loss pulls the mean-pooled embedding along."""
    from clir_eval.distill.losses import ot_from_cost, sqeuclidean_cost

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 7, 16, generator=generator), torch.randn(4, 9, 16, generator=generator) + 0.5
    mask_x, mask_y = torch.ones(4, 7, dtype=torch.bool), torch.ones(4, 9, dtype=torch.bool)
    scale = torch.tensor(3.0)
    _, result = ot_from_cost(sqeuclidean_cost(x, y, scale), mask_x, mask_y, epsilon=0.05, max_iter=5000, tol=1e-7)
    pooled = ((x.mean(1) - y.mean(1)) ** 2).sum(-1) / scale
    assert bool((result.value >= pooled - 1e-4).all()) and bool((result.value > pooled + 1e-2).any())


def test_pooled_marginals_follow_the_tokens_share_in_the_mean():
    from clir_eval.distill.losses import pooled_share

    tokens = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, True, False]])  # the last position is padding
    share = pooled_share(tokens, mask)
    torch.testing.assert_close(share.sum(1), torch.ones(1))
    assert float(share[0, 3]) == 0.0  # padding carries no mass
    assert float(share[0, 2]) < 0.01 < float(share[0, 0])  # a token pointing away from the mean hardly counts


def test_ot_options_change_the_loss_and_bad_names_are_refused():
    from clir_eval.distill.losses import Encoded, LossOptions, build_loss

    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(2, 5, dtype=torch.long)
    encoded = Encoded(student={"token_embeddings": torch.randn(2, 5, 8, generator=generator), "attention_mask": mask,
                               "sentence_embedding": torch.randn(2, 8, generator=generator)},
                      teacher={"token_embeddings": torch.randn(2, 5, 8, generator=generator), "attention_mask": mask,
                               "sentence_embedding": torch.randn(2, 8, generator=generator)})
    values = {(cost, marginals): float(build_loss("ot", LossOptions(ot_cost=cost, ot_marginals=marginals))
                                       .compute(encoded).total())
              for cost in ("cosine", "sqeuclidean") for marginals in ("uniform", "pooled")}
    assert len(set(values.values())) == 4
    with pytest.raises(ValueError, match="ot_cost must be one of"):
        LossOptions(ot_cost="euclid")
    with pytest.raises(ValueError, match="ot_marginals must be one of"):
        LossOptions(ot_marginals="idf")


def test_cosine_kd_reads_only_the_direction():
    """``kd_distance: cosine`` is 1 - cos: scaling a student vector leaves it unchanged, where MSE moves."""
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    expected = float((1 - torch.nn.functional.cosine_similarity(s, t, dim=1)).mean())
    assert math.isclose(float(kd_cosine_from_embeddings(s, t)), expected, rel_tol=1e-6)
    scaled = s * torch.tensor([[0.5], [2.0], [3.0], [0.1]])
    assert math.isclose(float(kd_cosine_from_embeddings(scaled, t)), expected, rel_tol=1e-5)
    assert not math.isclose(float(kd_from_embeddings(scaled, t)), float(kd_from_embeddings(s, t)), rel_tol=1e-2)
    assert float(kd_cosine_from_embeddings(3 * t, t)) < 1e-6
    with pytest.raises(ValueError, match="kd_distance"):
        LossOptions(kd_distance="l1")


def test_cosine_kd_training_turns_the_student_toward_the_teacher(tiny_bert_dir, tiny_bert_dir_48):
    """A few steps of cosine KD raise cos(student(foreign), teacher(English)) on the pairs trained on."""
    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir_48))
    teacher = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    match_dimensions(student, teacher)
    foreign, english = ["paka leo", "pesa benki", "mbwa mkubwa", "nyumba yangu"], \
        ["cat today", "money bank", "big dog", "my house"]
    batch = DistillBatch(source=student.tokenize(foreign), target=teacher.tokenize(english))
    loss = build_loss("kd", LossOptions(kd_distance="cosine"))

    def mean_cosine() -> float:
        with torch.no_grad():
            s = student(batch.source)["sentence_embedding"]
            t = teacher(batch.target)["sentence_embedding"]
        return float(torch.nn.functional.cosine_similarity(s, t, dim=1).mean())

    before = mean_cosine()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    student.train()
    for _ in range(5):
        optimizer.zero_grad()
        loss(student, teacher, batch).backward()
        optimizer.step()
    student.eval()
    assert mean_cosine() > before + 0.05


def _random_encoded(seed: int = 1) -> "Encoded":
    from clir_eval.distill.losses import Encoded

    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, 5, dtype=torch.long)

    def outputs() -> dict[str, torch.Tensor]:
        return {"token_embeddings": torch.randn(2, 5, 8, generator=generator), "attention_mask": mask,
                "sentence_embedding": torch.randn(2, 8, generator=generator)}

    return Encoded(student=outputs(), teacher=outputs())


def test_losses_return_named_parts_and_keep_no_state():
    """``compute`` returns each part under its name (weighted in a combined loss) and the Sinkhorn diagnostic;
    nothing is left on the modules, so the same loss gives the same result twice."""
    encoded = _random_encoded()
    options = LossOptions(ot_epsilon=0.1, ot_weight=0.3, contrastive_weight=0.7, ot_max_iter=1)
    single = {name: build_loss(name, options).compute(encoded) for name in ("kd", "ot", "contrastive")}
    for name, result in single.items():
        assert list(result.parts) == [name] and result.total() is result.parts[name]
    assert single["ot"].diagnostics == {"sinkhorn_unconverged": 1}  # one iteration cannot meet ot_tol
    converged = build_loss("ot", LossOptions(ot_epsilon=0.1, ot_max_iter=5000)).compute(encoded)
    assert converged.diagnostics == {"sinkhorn_unconverged": 0}
    for method, weight in (("kd+ot", 0.3), ("kd+contrastive", 0.7)):
        loss_fn = build_loss(method, options)
        before = {name: dict(vars(module)) for name, module in loss_fn.named_modules()}
        result = loss_fn.compute(encoded)
        other = method.split("+")[1]
        assert list(result.parts) == ["kd", other]
        assert torch.equal(result.parts["kd"], single["kd"].total())
        assert torch.equal(result.parts[other], weight * single[other].total())
        assert torch.equal(result.total(), result.parts["kd"] + result.parts[other])
        assert result.diagnostics == single[other].diagnostics
        assert {name: dict(vars(module)) for name, module in loss_fn.named_modules()} == before
        assert torch.equal(loss_fn.compute(encoded).total(), result.total())
    three = build_loss("kd+ot+contrastive", options).compute(encoded)
    assert list(three.parts) == ["kd", "ot", "contrastive"]
    assert torch.equal(three.parts["ot"], 0.3 * single["ot"].total())
    assert torch.equal(three.parts["contrastive"], 0.7 * single["contrastive"].total())
    assert torch.allclose(three.total(), single["kd"].total() + 0.3 * single["ot"].total()
                          + 0.7 * single["contrastive"].total())


def test_option_names_are_those_of_the_functions():
    from clir_eval.distill.losses import KD_DISTANCE_FUNCTIONS, KD_DISTANCES, OT_COST_NAMES, OT_COSTS

    assert list(KD_DISTANCE_FUNCTIONS) == list(KD_DISTANCES) and list(OT_COSTS) == list(OT_COST_NAMES)


def test_drawn_negatives_count_masked_repeats_out():
    gen = torch.Generator().manual_seed(0)
    s, t, extra = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen), torch.randn(5, 6, generator=gen)
    sn, cands = torch.nn.functional.normalize(s, dim=1), torch.nn.functional.normalize(torch.cat([t, extra]), dim=1)
    logits = sn @ cands.T / 0.1
    expected = -sum(float(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(3)) / 3
    assert math.isclose(float(info_nce_from_embeddings(s, t, 0.1, negatives=extra)), expected, rel_tol=1e-5)
    # Row 0's own English again among the negatives: masked for row 0, which then scores as without it; rows 1 and
    # 2 keep it as the negative it is for them.
    repeat = torch.cat([extra, t[:1]])
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 5] = True
    logits = sn @ torch.nn.functional.normalize(torch.cat([t, repeat]), dim=1).T / 0.1
    row0 = float(logits[0, 0] - torch.logsumexp(logits[0, :-1], 0))
    expected = -(row0 + sum(float(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in (1, 2))) / 3
    masked = float(info_nce_from_embeddings(s, t, 0.1, negatives=repeat, negative_mask=mask))
    assert math.isclose(masked, expected, rel_tol=1e-5)
    assert float(info_nce_from_embeddings(s, t, 0.1, negatives=repeat)) > masked + 1e-3


def test_drawn_negatives_teach_a_ranking_of_the_whole_bitext():
    """Batches of 4 give InfoNCE 3 negatives; 32 more drawn from the bank (NegativeBank, as the trainer draws
    them) train a linear student that ranks each sentence's target far higher among all 64 (MRR)."""
    from clir_eval.distill.data import NegativeBank

    def trained_mrr(negatives: int) -> float:
        gen = torch.Generator().manual_seed(0)
        x, targets = torch.randn(64, 16, generator=gen), torch.randn(64, 12, generator=gen)
        student = torch.nn.Linear(16, 12, bias=False)
        with torch.no_grad():
            student.weight.copy_(torch.randn(12, 16, generator=gen) * 0.1)
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
        bank = NegativeBank(list(targets), [str(i) for i in range(64)], negatives)
        order = torch.randperm(64 * 4, generator=gen) % 64
        for step in range(60):
            batch = order[4 * step : 4 * step + 4].numpy()
            extra, mask = bank.draw(batch, batch, seed=0, micro=step) if negatives else (None, None)
            loss = info_nce_from_embeddings(student(x[batch]), targets[batch], 0.1, negatives=extra,
                                            negative_mask=mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            scores = torch.nn.functional.normalize(student(x), dim=1) @ torch.nn.functional.normalize(targets, dim=1).T
        ranks = (scores > scores.diagonal()[:, None]).sum(dim=1) + 1
        return float((1.0 / ranks.float()).mean())

    in_batch, with_bank = trained_mrr(0), trained_mrr(32)
    assert with_bank > in_batch + 0.05, (in_batch, with_bank)


def test_a_loss_that_takes_negatives_refuses_a_batch_without_them(pair):
    student, teacher = pair
    match_dimensions(student, teacher)
    loss = build_loss("kd+contrastive", LossOptions(contrastive_negatives=8))
    assert loss.needs().negatives == 8
    with pytest.raises(ValueError, match="negatives"):
        loss(student, teacher, _batch(student, teacher))
    with torch.no_grad():  # dev evaluation scores the batch alone
        assert float(loss.eval()(student, teacher, _batch(student, teacher))) > 0
    with pytest.raises(ValueError, match="contrastive_negatives"):
        LossOptions(contrastive_negatives=-1)


def test_contrastive_english_through_student_adds_the_english_ranking(pair):
    """With English through the student, InfoNCE adds the same ranking for student(English): the loss is the sum
    of the two terms, the English one non-zero for a student that differs from the teacher."""
    from clir_eval.distill.losses import ContrastiveLoss

    student, teacher = pair
    match_dimensions(student, teacher)
    batch = _batch(student, teacher, with_student_target=True)
    with torch.no_grad():
        plain = ContrastiveLoss(temperature=0.1)(student, teacher, batch)
        both = ContrastiveLoss(temperature=0.1, english_through_student=True)(student, teacher, batch)
        term = info_nce_from_embeddings(student(batch.student_target)["sentence_embedding"],
                                        teacher(batch.target)["sentence_embedding"], 0.1)
    assert float(term) > 1e-3
    torch.testing.assert_close(both - plain, term)
    assert build_loss("kd+contrastive", LossOptions(contrastive_english_through_student=True)).needs().student_target
    with pytest.raises(ValueError, match="student_target"):
        ContrastiveLoss(english_through_student=True)(student, teacher, _batch(student, teacher))


def test_english_through_the_student_teaches_it_the_teachers_english_space():
    """A linear student trained on foreign inputs alone ranks its English inputs' targets at chance; with the
    English term it learns them too (MRR over 48 targets; chance is about 0.09). The foreign ranking stays well
    above chance, though below the foreign-only student's: the two inputs share one small map here."""

    from clir_eval.distill.losses import ContrastiveLoss, Encoded

    def trained_mrr(english_term: bool) -> tuple[float, float]:
        loss_fn = ContrastiveLoss(temperature=0.1, english_through_student=english_term)
        gen = torch.Generator().manual_seed(0)
        foreign, english = torch.randn(48, 32, generator=gen), torch.randn(48, 32, generator=gen)
        targets = torch.randn(48, 12, generator=gen)
        student = torch.nn.Linear(32, 12, bias=False)
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
        for step in range(200):
            batch = torch.arange(8 * step, 8 * step + 8) % 48
            encoded = Encoded(student={"sentence_embedding": student(foreign[batch])},
                              teacher={"sentence_embedding": targets[batch]},
                              student_target={"sentence_embedding": student(english[batch])})
            loss = loss_fn.compute(encoded).total()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def mrr(inputs: torch.Tensor) -> float:
            with torch.no_grad():
                scores = (torch.nn.functional.normalize(student(inputs), dim=1)
                          @ torch.nn.functional.normalize(targets, dim=1).T)
            ranks = (scores > scores.diagonal()[:, None]).sum(dim=1) + 1
            return float((1.0 / ranks.float()).mean())

        return mrr(foreign), mrr(english)

    (foreign_plain, english_plain), (foreign_both, english_both) = trained_mrr(False), trained_mrr(True)
    assert english_both > english_plain + 0.3, (english_plain, english_both)
    assert english_plain < 0.2 and foreign_both > 0.3 and foreign_plain > 0.5, (foreign_plain, foreign_both)


def test_a_sharp_plan_has_lower_entropy_and_a_higher_row_max_than_a_diffuse_one():
    """Through OTLoss.compute on tensors: tokens with clear nearest neighbours (the teacher's tokens are a
    permutation of the student's plus noise) give a sharp plan at small epsilon and a diffuse one at large."""
    from clir_eval.distill.losses import PLAN_ENTROPY, PLAN_ROW_MAX, Encoded, plan_sharpness

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 16, generator=gen)
    y = x[:, torch.randperm(7, generator=gen)] + 0.1 * torch.randn(3, 7, 16, generator=gen)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0  # a shorter student sentence: its padding takes no part
    encoded = Encoded(student={"token_embeddings": x, "attention_mask": mask},
                      teacher={"token_embeddings": y, "attention_mask": torch.ones(3, 7, dtype=torch.long)})
    stats = {}
    for epsilon in (0.005, 1.0):
        result = OTLoss(epsilon=epsilon, max_iter=5000, tol=1e-6).compute(encoded)
        assert set(result.stats) == {PLAN_ENTROPY, PLAN_ROW_MAX} and result.diagnostics == {"sinkhorn_unconverged": 0}
        stats[epsilon] = result.stats
    assert stats[0.005][PLAN_ENTROPY] < 0.2 < 0.9 < stats[1.0][PLAN_ENTROPY] <= 1.0
    assert stats[1.0][PLAN_ROW_MAX] < 0.3 < 0.9 < stats[0.005][PLAN_ROW_MAX] <= 1.0
    exact = OTLoss(solver="emd").compute(encoded).stats
    assert exact[PLAN_ROW_MAX] > stats[0.005][PLAN_ROW_MAX] - 1e-6 and "sinkhorn_unconverged" not in \
        OTLoss(solver="emd").compute(encoded).diagnostics
    # By hand: a one-hot row has entropy 0 and maximum 1; a uniform row over 4 columns entropy 1 and maximum 1/4.
    plan = torch.tensor([[[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5], [9.0, 9.0, 9.0, 9.0]],
                         [[0.125, 0.125, 0.125, 0.125], [0.125, 0.125, 0.125, 0.125], [0.0, 0.0, 0.0, 0.0]]])
    sharp = plan_sharpness(plan, torch.tensor([[True, True, False], [True, True, False]]),
                           torch.ones(2, 4, dtype=torch.bool))
    assert math.isclose(sharp.entropy, 0.5, abs_tol=1e-12) and math.isclose(sharp.row_max, 0.625, abs_tol=1e-12)


def test_a_combined_loss_passes_the_ot_stats_on(pair):
    student, teacher = pair
    match_dimensions(student, teacher, seed=0)
    result = build_loss("kd+ot", LossOptions(ot_epsilon=0.1)).compute(
        encode_batch(student, teacher, _batch(student, teacher), build_loss("kd+ot").needs()))
    assert set(result.stats) == {"ot_plan_entropy", "ot_plan_row_max"}
    assert build_loss("kd").compute(encode_batch(student, teacher, _batch(student, teacher), Needs())).stats == {}
