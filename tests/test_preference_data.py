"""The preference data set: what it holds out, and that nothing it measures on is trained."""

from __future__ import annotations

from numpylm.io.loading import load
from numpylm.training.chat_data import make_chat_data
from numpylm.training.preference_data import IDK, make_preference_data, untaught_questions


def test_pairs_never_ask_what_is_measured_and_untaught_is_untaught() -> None:
    chat = make_chat_data()
    trained = {e.prompt for e in chat.train}
    new = untaught_questions()
    # the new untaught facts are neither taught by the chat data nor among its evaluation groups
    evaluated = {e.prompt for e in chat.untaught + chat.reworded}
    assert not {e.prompt for e in new} & (trained | evaluated)
    model, tokenizer = load("chat")
    data = make_preference_data(model, tokenizer, rejected="other")
    assert data == make_preference_data(model, tokenizer, rejected="other")  # deterministic
    asked = {p.prompt for p in data.pairs}
    measured = {p.prompt for p in data.held_out_pairs} | {e.prompt for e in data.held_out_taught}
    assert not asked & measured
    assert not asked & {e.prompt for e in data.untaught}
    for p in data.pairs:
        assert p.chosen != p.rejected and IDK in (p.chosen, p.rejected)
        if p.chosen == IDK:  # an untaught question: a wrong answer of the same kind is rejected
            assert p.prompt not in trained
        else:  # a taught fact keeps the answer it was taught
            assert p.prompt in trained
    # the held-out pairs reject what the chat model really answers, never the truth
    truth = {e.prompt: e.response for e in data.untaught}
    untaught_pairs = [p for p in data.held_out_pairs if p.chosen == IDK]
    assert len(untaught_pairs) == 59 and all(p.rejected != truth[p.prompt] for p in untaught_pairs)
    assert next(p for p in untaught_pairs if "Uganda" in p.prompt).rejected == "Wellington."
