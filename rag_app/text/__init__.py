"""Text rules shared by retrieval, answering and the evaluation, one home for each:

    words.py      the word pattern, the stop list, terms(), stem()
    sentences.py  split_sentences, sentence_breaks, strip_citations (answers)
    numbers.py    numbers_in, unstated_numbers (one digit-separator rule)
    quotes.py     normalise, find_quote, quote_pieces (is a quote in its passage?)
"""
