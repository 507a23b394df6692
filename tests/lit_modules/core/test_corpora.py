"""The corpora's documents: a play's scenes, a poem's chunks, a Markdown page's sections."""

from lit_modules.core.corpora import POEM_LINES, documents, sections


def test_corpus_splits_plays_into_scenes_and_poems_into_chunks():
    play = (
        "THE TEMPEST\n\nSCENE: An island.\n\nACT I.\n\nSCENE 1. On a ship.\n\nMaster.\nBoatswain!\n\n"
        "Scene II. The island.\nProspero.\nBe collected."
    )
    assert documents(play) == [
        "THE TEMPEST SCENE: An island. ACT I.",  # front matter ("SCENE:" is a setting, not a scene)
        "SCENE 1. On a ship. Master. Boatswain!",
        "Scene II. The island. Prospero. Be collected.",
    ]
    poem = "\n".join(f"line {i}" for i in range(POEM_LINES + 5))
    assert [len(d.split(" line ")) for d in documents(poem)] == [POEM_LINES, 5]


def test_markdown_pages_are_cut_at_their_headings():
    page = "---\ntitle: Tables\n---\n\nIntro text\nmore.\n\n# Tables\n\nA table:\n\n| a | b |\n\n## Syntax\n\nPipes.\n"
    assert sections(page) == [
        "--- title: Tables --- Intro text more.",
        "# Tables A table: | a | b |",
        "## Syntax Pipes.",
    ]
