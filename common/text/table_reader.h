/* table_reader: spreadsheet-shaped data files (.csv, .tsv, .xlsx) as dataset
 * records.
 *
 * The first row names the fields; every later row becomes one JSON object
 * {"header name": cell, ...}, the same object a JSONL line would hold, so
 * dataset.c parses it with the JSONL path and every record check and
 * message is shared. How a cell becomes a JSON value goes by its column:
 *   messages                           parsed as JSON ([{role, content}])
 *   margin, score_chosen, score_rejected  a number
 *   label                              true/false (TRUE, 1, yes, 1.0 / FALSE, 0, no, 0.0)
 *   any other column                   the cell's text as a string (an .xlsx
 *                                      number as Excel shows it, "42", "0.1")
 * Header names are trimmed, and the field names above match in any case
 * ("Question", "ANSWER"). An empty cell is a missing value: in the record text columns (prompt,
 * question, answer, completion, chosen, rejected, text, messages) it is an
 * error naming the column ("qa.csv:3: column \"answer\" is empty"); in any
 * other column the field is left out; cells missing at the end of a short
 * row are empty cells. A header that is one column holding a ';' (or a tab
 * in a .csv, a comma in a .tsv) is refused naming the separator. Columns with an empty header (the
 * index column pandas' to_csv writes) are ignored; rows whose cells are all
 * empty are skipped.
 *
 * CSV/TSV: RFC 4180 with libcsv (quoted fields, doubled quotes, newlines
 * inside quotes; strict: a stray quote is an error), a UTF-8 BOM ignored,
 * spaces kept as written; a first line "sep=;" (Excel's separator hint)
 * sets the separator. Rows are named by the line they start on (with no
 * newline inside a field, the spreadsheet's row number). The file is read
 * one line at a time and checked for UTF-8 like JSONL.
 *
 * .xlsx: the first worksheet, or the one named by `sheet`, read with libzip
 * and libxml2: shared strings (rich text included), inline strings, formula
 * results, numbers, booleans. Rows are named by Excel's row number. The
 * shared strings and the sheet are streamed (xmlTextReader), so memory is
 * the workbook's strings plus one row. An error cell (#N/A) or a missing
 * shared string spoils its row only; XML cut off stops the reading. */
#ifndef ALIGN_TABLE_READER_H
#define ALIGN_TABLE_READER_H

#include <stddef.h>

/* 1 when the path ends in .csv, .tsv or .xlsx (any case). */
int table_is_table_path(const char *path);

typedef struct TableReader TableReader;

/* Open a table file and read its header row. sheet: an .xlsx worksheet's
 * name, NULL = the first; given for a CSV/TSV file it is an error. */
TableReader *table_open(const char *path, const char *sheet);
/* The same on bytes in memory (for fuzzing); name's extension picks the
 * format and names the file in errors. data must outlive the reader. */
TableReader *table_open_mem(const char *name, const void *data, size_t len, const char *sheet);

/* The next data row as one JSON object's text (valid until the next call)
 * and its row number: 1 = a row, 0 = the end, -1 = a bad row (the error
 * names "file:row" and the column at fault; the next call goes on after
 * it), -2 = the file cannot be read further (a CSV syntax error, a read
 * error: the error names the line). */
int table_next(TableReader *t, const char **json, size_t *len, long *row);

void table_close(TableReader *t);

/* One row -> JSON object text (malloc'd), by the column rules above.
 * names[i] = NULL or "" drops column i; cells[i] may be NULL (empty).
 * NULL with the error "<where>: column ..." on a bad cell; *all_empty is set
 * (and NULL returned without an error) when the row has no non-empty cell
 * in a named column. */
char *table_row_json(const char *const *names, const char *const *cells, int n, const char *where, int *all_empty);

#endif
