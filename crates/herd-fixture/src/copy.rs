//! Rows into PostgreSQL through `COPY ... FROM STDIN` in text format, in
//! bounded chunks, so a table of any size streams through a fixed buffer.

use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use crate::FixtureError;

const FLUSH_AT: usize = 1 << 20;

pub struct CopyRows {
    table: &'static str,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buffer: BytesMut,
    columns: usize,
    fields: usize,
    rows: u64,
}

/// A value in COPY's text format.
pub trait CopyValue {
    fn write(&self, out: &mut BytesMut);
}

impl CopyRows {
    pub async fn start(
        client: &Client,
        table: &'static str,
        columns: &str,
    ) -> Result<Self, FixtureError> {
        let statement = format!("COPY {table} ({columns}) FROM STDIN");
        let sink = client
            .copy_in(&statement)
            .await
            .map_err(FixtureError::postgres(&statement))?;
        Ok(CopyRows {
            table,
            sink: Box::pin(sink),
            buffer: BytesMut::with_capacity(FLUSH_AT + FLUSH_AT / 4),
            columns: columns.split(',').count(),
            fields: 0,
            rows: 0,
        })
    }

    pub fn field(&mut self, value: impl CopyValue) -> &mut Self {
        if self.fields > 0 {
            self.buffer.put_u8(b'\t');
        }
        self.fields += 1;
        value.write(&mut self.buffer);
        self
    }

    pub async fn end_row(&mut self) -> Result<(), FixtureError> {
        // A miscounted row would fail the whole COPY with a message about a
        // column far from the mistake; name the table here instead.
        assert_eq!(
            self.fields, self.columns,
            "fields of a row of {}",
            self.table
        );
        self.buffer.put_u8(b'\n');
        self.fields = 0;
        self.rows += 1;
        if self.buffer.len() >= FLUSH_AT {
            let chunk = self.buffer.split().freeze();
            self.sink
                .send(chunk)
                .await
                .map_err(FixtureError::postgres(self.table))?;
        }
        Ok(())
    }

    /// Sends what is buffered and commits the COPY; returns the row count.
    pub async fn finish(mut self) -> Result<u64, FixtureError> {
        if !self.buffer.is_empty() {
            let chunk = self.buffer.split().freeze();
            self.sink
                .send(chunk)
                .await
                .map_err(FixtureError::postgres(self.table))?;
        }
        self.sink
            .as_mut()
            .finish()
            .await
            .map_err(FixtureError::postgres(self.table))?;
        Ok(self.rows)
    }
}

/// SQL NULL.
pub struct Null;

/// A `timestamp without time zone` given in milliseconds since the epoch.
pub struct Millis(pub i64);

/// A time given in milliseconds, or a literal for values at the edges of what
/// PostgreSQL accepts (`infinity`, years BC).
pub enum Time {
    At(i64),
    Literal(&'static str),
}

/// A `bigint[]`.
pub struct Ids<'a>(pub &'a [i64]);

/// A `character varying[]`.
pub struct Words<'a>(pub &'a [&'a str]);

impl CopyValue for Null {
    fn write(&self, out: &mut BytesMut) {
        out.put_slice(b"\\N");
    }
}

impl CopyValue for &str {
    fn write(&self, out: &mut BytesMut) {
        escape(self, out);
    }
}

impl CopyValue for String {
    fn write(&self, out: &mut BytesMut) {
        escape(self, out);
    }
}

impl CopyValue for i64 {
    fn write(&self, out: &mut BytesMut) {
        out.put_slice(self.to_string().as_bytes());
    }
}

impl CopyValue for u64 {
    fn write(&self, out: &mut BytesMut) {
        out.put_slice(self.to_string().as_bytes());
    }
}

impl CopyValue for f64 {
    fn write(&self, out: &mut BytesMut) {
        out.put_slice(self.to_string().as_bytes());
    }
}

impl CopyValue for bool {
    fn write(&self, out: &mut BytesMut) {
        out.put_u8(if *self { b't' } else { b'f' });
    }
}

impl CopyValue for Millis {
    fn write(&self, out: &mut BytesMut) {
        let time = chrono::DateTime::from_timestamp_millis(self.0)
            .expect("fixture times are within chrono's range");
        out.put_slice(time.format("%Y-%m-%d %H:%M:%S%.3f").to_string().as_bytes());
    }
}

impl CopyValue for Time {
    fn write(&self, out: &mut BytesMut) {
        match self {
            Time::At(millis) => Millis(*millis).write(out),
            Time::Literal(literal) => out.put_slice(literal.as_bytes()),
        }
    }
}

impl CopyValue for Ids<'_> {
    fn write(&self, out: &mut BytesMut) {
        let items: Vec<String> = self.0.iter().map(i64::to_string).collect();
        out.put_slice(format!("{{{}}}", items.join(",")).as_bytes());
    }
}

impl CopyValue for Words<'_> {
    fn write(&self, out: &mut BytesMut) {
        // Array elements are quoted, then the whole literal is escaped for COPY.
        let items: Vec<String> = self
            .0
            .iter()
            .map(|word| format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        escape(&format!("{{{}}}", items.join(",")), out);
    }
}

impl<T: CopyValue> CopyValue for &T {
    fn write(&self, out: &mut BytesMut) {
        (*self).write(out);
    }
}

impl<T: CopyValue> CopyValue for Option<T> {
    fn write(&self, out: &mut BytesMut) {
        match self {
            Some(value) => value.write(out),
            None => Null.write(out),
        }
    }
}

fn escape(text: &str, out: &mut BytesMut) {
    for byte in text.bytes() {
        match byte {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            other => out.put_u8(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: impl CopyValue) -> String {
        let mut out = BytesMut::new();
        value.write(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn text_that_looks_like_null_or_separators_stays_text() {
        assert_eq!(written("\\N"), "\\\\N");
        assert_eq!(written("a\tb\nc\r"), "a\\tb\\nc\\r");
        assert_eq!(written(None::<&str>), "\\N");
        assert_eq!(written(""), "");
    }

    #[test]
    fn arrays_and_times() {
        assert_eq!(written(Ids(&[1, -2])), "{1,-2}");
        assert_eq!(written(Ids(&[])), "{}");
        assert_eq!(written(Words(&["en", "a\"b"])), "{\"en\",\"a\\\\\"b\"}");
        assert_eq!(written(Millis(0)), "1970-01-01 00:00:00.000");
    }
}
