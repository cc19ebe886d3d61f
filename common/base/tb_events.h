/* tb_events: TensorBoard event files (--report-to tensorboard).
 *
 * A TbWriter writes <dir>/events.out.tfevents.<seconds>.<host>.<pid>: a
 * TFRecord stream (per record: u64 length, masked CRC-32C of the length,
 * the bytes, masked CRC-32C of the bytes; little-endian) of Event messages
 * (tb_event.proto, encoded by protobuf-c). The first event carries the
 * file version "brain.Event:2"; each later one the scalars of one step as
 * simple_value summaries, under the caller's tags. Records are flushed as
 * they are written, so TensorBoard follows a run while it goes. */
#ifndef ALIGN_TB_EVENTS_H
#define ALIGN_TB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct TbWriter TbWriter;

/* Create dir (and its parents) and a new event file in it. NULL with an
 * error naming the directory. */
TbWriter *tb_writer_open(const char *dir);
/* One event at `step` (wall time now) holding n scalars tags[i] = values[i]
 * (as float, simple_value's type). Non-finite values are written as they
 * are (TensorBoard shows NaN/Inf). */
int tb_writer_scalars(TbWriter *w, long step, int n, const char *const *tags, const double *values);
const char *tb_writer_path(const TbWriter *w);
void tb_writer_close(TbWriter *w);

/* One TFRecord (framing above) of data[0..n) onto buf (malloc'd, *len
 * set). Exposed for the tests. */
int tb_record_frame(const void *data, size_t n, uint8_t **buf, size_t *len);

#endif
