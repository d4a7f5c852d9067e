"""branch_pmass and the target-axis logit against simple full-forward references."""

import torch

from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.model import prompts
from isokl.core.model.hooks import steer
from isokl.study.metrics import SUFFIX, answer_ids, branch_pmass, target_logit, word_ids


def _tf_seqs(lm, n=3):
    return lm.encode([lm.format(p) for p in prompts.pool("heldout_truefalse")[:n]])


def test_branch_pmass_matches_full_forward_reference(tiny_lm):
    vec = extract(tiny_lm, concept.extraction_pairs(0), "mean_diff")
    seqs, forks, T = _tf_seqs(tiny_lm), (0, 3, 7, 10), 10
    pm = branch_pmass(tiny_lm, seqs, vec, (0.0, 4.0), T=T, forks=forks)
    t_ids, f_ids = answer_ids(tiny_lm.tokenizer)
    suffix = tiny_lm.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    for k, c in enumerate((0.0, 4.0)):
        for i, seq in enumerate(seqs):
            gen = pm.rollout_tokens[k * len(seqs) + i].tolist()
            for j, t in enumerate(forks):
                full = torch.tensor([seq + gen[:t] + suffix])
                with steer(tiny_lm.model, vec, c), torch.no_grad():
                    p = torch.softmax(tiny_lm.model(full).logits[0, -1].double(), -1)
                want = float(p[t_ids].sum() + p[f_ids].sum())
                assert abs(float(pm.pmass[k, i, j]) - want) < 1e-6
    assert ((pm.pmass >= 0) & (pm.pmass <= 1)).all()
    assert (pm.p_true <= pm.pmass + 1e-12).all()


def test_pmass_changes_with_dose(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    pm = branch_pmass(llama_lm, _tf_seqs(llama_lm), vec, (0.0, 50.0), T=10, forks=(0, 5, 10))
    assert not torch.allclose(pm.pmass[0], pm.pmass[1])


def test_forks_after_eos_are_censored(llama_lm):
    seqs = _tf_seqs(llama_lm, 2)
    pm = branch_pmass(llama_lm, seqs, None, (0.0,), T=8, forks=(0, 4, 8))
    llama_lm.eos_ids = (int(pm.rollout_tokens[0, 2]),)  # row 0 "ends" at its third token
    pm = branch_pmass(llama_lm, seqs, None, (0.0,), T=8, forks=(0, 4, 8))
    assert pm.censored[0, 0].tolist() == [False, True, True]


def test_answer_ids_keep_each_answers_own_first_tokens_and_drop_the_shared_space(llama_lm):
    """Byte-level tokens: ' true' and ' false' both start with the space byte, which commits to neither answer; 'true',
    'True', 'TRUE' start with t / T and the false spellings with f / F."""
    tok = llama_lm.tokenizer
    first = lambda text: tok(text, add_special_tokens=False)["input_ids"][0]
    t, f = answer_ids(tok)
    assert set(t) == {first("t"), first("T")} and set(f) == {first("f"), first("F")}
    assert first(" ") not in set(t) | set(f)


def test_target_logit_matches_direct_computation(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "pca")
    probes = concept.Concept.load("sentiment").probes()[:3]
    seqs = llama_lm.encode([llama_lm.format(p) for p in probes])
    L = target_logit(llama_lm, seqs, vec, (0.0, 3.0), ["good", "great"], ["bad", "awful"])
    pos, neg = sorted(word_ids(llama_lm.tokenizer, ["good", "great"])), sorted(word_ids(llama_lm.tokenizer, ["bad", "awful"]))
    shared = set(pos) & set(neg)
    pos, neg = [x for x in pos if x not in shared], [x for x in neg if x not in shared]
    for k, c in enumerate((0.0, 3.0)):
        for i, s in enumerate(seqs):
            with steer(llama_lm.model, vec, c), torch.no_grad():
                lg = llama_lm.model(torch.tensor([s])).logits[0, -1].double()
            assert abs(float(L[k, i]) - float(torch.logsumexp(lg[pos], 0) - torch.logsumexp(lg[neg], 0))) < 1e-6
    assert not torch.allclose(L[0], L[1])


def test_distinct3_counts_repeated_trigrams_and_is_undefined_below_three_tokens():
    from isokl.study.measures import distinct3

    assert distinct3([1, 2, 3, 4, 5]) == 1.0  # 3 trigrams, all distinct
    assert distinct3([7, 8, 7, 8, 7, 8, 7, 8]) == 2 / 6  # a two-token loop: trigrams (7,8,7) and (8,7,8) only
    assert distinct3([1, 2]) == "" and distinct3([]) == ""
