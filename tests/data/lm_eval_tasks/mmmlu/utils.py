"""Subject filters, as in lm-eval's openai-mmmlu/default/utils.py (one CSV per locale, many subjects)."""


def _filter_subject(dataset, subject):
    return dataset.filter(lambda row: row["Subject"] == subject)


def process_elementary_mathematics(dataset):
    return _filter_subject(dataset, "elementary_mathematics")


def process_world_religions(dataset):
    return _filter_subject(dataset, "world_religions")
