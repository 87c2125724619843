//! `sweeper query`: SQL the user types, run so that it can only read, whatever it says.
//!
//! Three layers guard it:
//!
//! 1. The text is parsed ([`check_read_only`]): it must be one statement that reads
//!    (a query, `EXPLAIN` of one, or on SQLite a pragma that only reports). Writes,
//!    `COPY`, `VACUUM`, `ATTACH`, `SET`, data-modifying CTEs, `SELECT … INTO`, row
//!    locks and the functions that reach past the tables (server files, large objects,
//!    other sessions, settings, extensions, SQL run from a string) are refused before
//!    the database sees anything. What runs is the parsed statement printed back, so
//!    the database executes exactly what was checked.
//! 2. SQLite opens the file read-only with `query_only` on, temporary tables in memory
//!    and untrusted schema functions off. Postgres runs the statement inside a
//!    `READ ONLY` transaction that is rolled back.
//! 3. On Postgres a superuser's query runs as the predefined role `pg_read_all_data`,
//!    which reads every table and may do nothing else: no server files, no other
//!    session's backend, no `COPY` to or from the server.

use std::str::FromStr;

use serde_json::{Number, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Connection as _, Executor as _, Row as _, TypeInfo as _, ValueRef as _};

use super::error::Context as _;
use super::read_only::check_read_only;
use super::table::Table;
use super::{Backend, StoreError, StoreResult};

/// Runs `sql` read-only against the store at `url`; refuses ([`StoreError::Refused`])
/// what [`check_read_only`] refuses.
pub async fn query_read_only(url: &str, sql: &str) -> StoreResult<Table> {
    let backend = Backend::of_url(url)?;
    let sql = check_read_only(backend, sql).map_err(|reason| StoreError::Refused { reason })?;
    let sql = sql.as_str();
    let open_error = |source| StoreError::open(url, &source);
    let query_error = |source| StoreError::Query { source };
    match backend {
        Backend::Sqlite => {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(open_error)?
                .read_only(true)
                .create_if_missing(false)
                .pragma("query_only", "ON")
                .pragma("temp_store", "MEMORY")
                .pragma("trusted_schema", "OFF")
                .busy_timeout(std::time::Duration::from_secs(60));
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .map_err(open_error)?;
            let columns = column_names(conn.describe(sql).await.map_err(query_error)?.columns());
            let rows = conn.fetch_all(sql).await.map_err(query_error)?;
            let mut table = Table::new(columns);
            for row in &rows {
                table.push(sqlite_row(row));
            }
            Ok(table)
        }
        Backend::Postgres => {
            let options = PgConnectOptions::from_str(url).map_err(open_error)?;
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(open_error)?;
            conn.execute("BEGIN READ ONLY")
                .await
                .context("cannot start a read-only transaction")?;
            // A superuser could read server files or end other sessions from a
            // function the parser does not know; `pg_read_all_data` (Postgres 14+)
            // only reads tables. Other users keep their own rights, which lack these.
            let drop_rights: bool = sqlx::query_scalar(
                "SELECT to_regrole('pg_read_all_data') IS NOT NULL \
                     AND COALESCE((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), FALSE)",
            )
            .fetch_one(&mut conn)
            .await
            .context("cannot read the rights of the store's user")?;
            if drop_rights {
                conn.execute("SET LOCAL ROLE pg_read_all_data")
                    .await
                    .context("cannot take the read-only role pg_read_all_data")?;
            }
            // `describe` parses the text as one prepared statement, which Postgres
            // refuses for more than one; only then is the text run, through the simple
            // protocol, which returns every type as text.
            let described = conn.describe(sql).await.map_err(query_error);
            let rows = match described {
                Ok(described) => {
                    let columns = column_names(described.columns());
                    conn.fetch_all(sql)
                        .await
                        .map_err(query_error)
                        .map(|rows| (columns, rows))
                }
                Err(error) => Err(error),
            };
            conn.execute("ROLLBACK")
                .await
                .context("cannot end a read-only transaction")?;
            let (columns, rows) = rows?;
            let mut table = Table::new(columns);
            for row in &rows {
                table.push(postgres_row(row));
            }
            Ok(table)
        }
    }
}

fn column_names<C: sqlx::Column>(columns: &[C]) -> Vec<String> {
    columns.iter().map(|c| c.name().to_owned()).collect()
}

fn sqlite_row(row: &SqliteRow) -> Vec<Value> {
    (0..row.len())
        .map(|i| {
            let Ok(raw) = row.try_get_raw(i) else {
                return Value::Null;
            };
            if raw.is_null() {
                return Value::Null;
            }
            // SQLite's values carry their own type, whatever the column says.
            let type_name = raw.type_info().name().to_owned();
            match type_name.as_str() {
                "INTEGER" | "BOOLEAN" => row
                    .try_get::<i64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                "REAL" => row
                    .try_get::<f64, _>(i)
                    .ok()
                    .and_then(Number::from_f64)
                    .map_or(Value::Null, Value::Number),
                "BLOB" => row
                    .try_get::<Vec<u8>, _>(i)
                    .map(|b| Value::String(hex::encode(b)))
                    .unwrap_or(Value::Null),
                _ => row
                    .try_get::<String, _>(i)
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            }
        })
        .collect()
}

fn postgres_row(row: &PgRow) -> Vec<Value> {
    (0..row.len())
        .map(|i| {
            let Ok(raw) = row.try_get_raw(i) else {
                return Value::Null;
            };
            if raw.is_null() {
                return Value::Null;
            }
            let type_name = raw.type_info().name().to_owned();
            let Ok(text) = raw.as_str() else {
                return Value::Null;
            };
            match type_name.as_str() {
                "INT2" | "INT4" | "INT8" | "OID" => text
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| text.into()),
                "FLOAT4" | "FLOAT8" | "NUMERIC" => text
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map_or_else(|| text.into(), Value::Number),
                "BOOL" => Value::Bool(text == "t"),
                "JSON" | "JSONB" => serde_json::from_str(text).unwrap_or_else(|_| text.into()),
                _ => text.into(),
            }
        })
        .collect()
}
