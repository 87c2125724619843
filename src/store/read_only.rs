//! What `sweeper query` lets through: one statement that reads, checked on its parse
//! before the database sees it. See [`check_read_only`].

use std::ops::ControlFlow;

use sqlparser::ast::{Ident, Query, Select, Statement, Visit, Visitor};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::Backend;

/// Functions (and table functions) that reach past the store's tables: on Postgres
/// server files, large objects, other sessions, the server's settings and processes,
/// locks that workers wait on, remote databases, and SQL run from a string (which the
/// parser cannot see into); on SQLite extensions and files. A name matches when it is
/// one of these or starts with one that ends in `_`. Both backends refuse every name,
/// so that a statement is refused the same way whichever store it is sent to.
const REFUSED_FUNCTIONS: &[&str] = &[
    "pg_read_",
    "pg_ls_",
    "pg_stat_file",
    "pg_file_",
    "pg_logdir_ls",
    "lo_",
    "loread",
    "lowrite",
    "dblink",
    "dblink_",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_",
    "pg_create_",
    "pg_drop_replication_slot",
    "pg_copy_",
    "pg_replication_",
    "pg_logical_",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_",
    "pg_log_",
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_stat_reset",
    "pg_import_system_collations",
    "pg_notify",
    "set_config",
    "setval",
    "nextval",
    "query_to_xml",
    "query_to_xml_",
    "query_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "load_extension",
    "writefile",
    "readfile",
    "fts3_tokenizer",
];

/// Pragmas that only report, run bare (`PRAGMA page_count`).
const SQLITE_REPORTING_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "busy_timeout",
    "cache_size",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "journal_mode",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "query_only",
    "schema_version",
    "synchronous",
    "table_list",
    "user_version",
    "wal_autocheckpoint",
];

/// Pragmas whose argument names what to report on (`PRAGMA table_info(jobs)`).
const SQLITE_LOOKUP_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// The statement `sweeper query` may run for `sql`, printed back from its parse, or
/// why it may not: `sql` must be exactly one statement that reads.
pub fn check_read_only(backend: Backend, sql: &str) -> Result<String, String> {
    let dialect: &dyn Dialect = match backend {
        Backend::Sqlite => &SQLiteDialect {},
        Backend::Postgres => &PostgreSqlDialect {},
    };
    let tokens: Vec<Token> = Tokenizer::new(dialect, sql)
        .tokenize()
        .map_err(|error| format!("cannot read the SQL: {error}"))?
        .into_iter()
        .filter(|token| !matches!(token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let first = match tokens.first() {
        Some(Token::Word(word)) => word.value.to_uppercase(),
        Some(Token::LParen) => "(".to_owned(),
        Some(other) => other.to_string(),
        None => return Err("no SQL statement given".into()),
    };
    if backend == Backend::Sqlite && first == "PRAGMA" {
        return sqlite_pragma(&tokens[1..]);
    }
    let statements = Parser::parse_sql(dialect, sql).map_err(|error| {
        if ["SELECT", "WITH", "VALUES", "EXPLAIN", "TABLE", "("].contains(&first.as_str()) {
            format!("cannot parse the SQL: {error}")
        } else {
            not_a_query(backend, &first)
        }
    })?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err("no SQL statement given".into()),
        many => {
            return Err(format!(
                "{} statements given; it runs one statement at a time",
                many.len()
            ))
        }
    };
    match statement {
        Statement::Query(_) => {}
        Statement::Explain { statement, .. } if matches!(**statement, Statement::Query(_)) => {}
        Statement::Explain { .. } => {
            return Err("EXPLAIN runs here only for a query (SELECT, WITH, VALUES)".into())
        }
        other => return Err(not_a_query(backend, &statement_kind(other))),
    }
    let mut check = ReadOnlyCheck {
        refused: REFUSED_FUNCTIONS,
        statements: 0,
    };
    if let ControlFlow::Break(reason) = statement.visit(&mut check) {
        return Err(reason);
    }
    Ok(statement.to_string())
}

fn not_a_query(backend: Backend, what: &str) -> String {
    format!(
        "{what} is not a query; only SELECT, WITH, VALUES and EXPLAIN of a query run here{}",
        if backend == Backend::Sqlite {
            " (and pragmas that report)"
        } else {
            ""
        }
    )
}

/// A SQLite pragma that only reports, rebuilt from its tokens (after `PRAGMA`):
/// `[schema.]name` bare, or a lookup pragma with one name or number in parentheses.
/// sqlparser reads no identifier argument (`table_info(jobs)`), hence by hand.
fn sqlite_pragma(tokens: &[Token]) -> Result<String, String> {
    let mut tokens = tokens;
    while let [rest @ .., Token::SemiColon] = tokens {
        tokens = rest;
    }
    let word = |token: &Token| match token {
        Token::Word(word) => Some(word.value.clone()),
        _ => None,
    };
    let (schema, name, rest) = match tokens {
        [first, Token::Period, second, rest @ ..] => (word(first), word(second), rest),
        [first, rest @ ..] => (None, word(first), rest),
        [] => return Err("PRAGMA names no pragma".into()),
    };
    let Some(name) = name.map(|n| n.to_lowercase()) else {
        return Err("PRAGMA names no pragma".into());
    };
    let schema = match schema {
        Some(schema) => format!("\"{}\".", schema.replace('"', "\"\"")),
        None if matches!(tokens.get(1), Some(Token::Period)) => {
            return Err("PRAGMA names no schema".into())
        }
        None => String::new(),
    };
    let argument = match rest {
        [] => None,
        [Token::LParen, Token::Word(word), Token::RParen] => Some(word.value.clone()),
        [Token::LParen, Token::SingleQuotedString(text), Token::RParen] => Some(text.clone()),
        [Token::LParen, Token::Number(number, _), Token::RParen] => Some(number.clone()),
        _ => {
            return Err(format!(
                "PRAGMA {name} with a value may change the store or the connection; only \
                 pragmas that report run here"
            ))
        }
    };
    let reports = match &argument {
        None => {
            SQLITE_REPORTING_PRAGMAS.contains(&name.as_str())
                || SQLITE_LOOKUP_PRAGMAS.contains(&name.as_str())
        }
        Some(_) => SQLITE_LOOKUP_PRAGMAS.contains(&name.as_str()),
    };
    if !reports {
        return Err(format!(
            "PRAGMA {name}{} may change the store or the connection; only pragmas that \
             report run here",
            if argument.is_some() {
                " with a value"
            } else {
                ""
            }
        ));
    }
    Ok(match argument {
        None => format!("PRAGMA {schema}{name}"),
        Some(argument) => format!("PRAGMA {schema}{name}('{}')", argument.replace('\'', "''")),
    })
}

/// The first words of a statement, for a refusal.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .next()
        .map_or_else(|| "the statement".to_owned(), str::to_uppercase)
}

/// Walks a query, refusing nested statements (`WITH d AS (DELETE …)`), `SELECT …
/// INTO`, row locks and refused functions.
struct ReadOnlyCheck {
    refused: &'static [&'static str],
    statements: usize,
}

impl Visitor for ReadOnlyCheck {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        self.statements += 1;
        // The statement itself (a query or EXPLAIN of one) and EXPLAIN's query; a
        // query holds no other statement unless it writes (`WITH d AS (DELETE …)`).
        let reads = matches!(statement, Statement::Query(_))
            || (self.statements == 1 && matches!(statement, Statement::Explain { .. }));
        if reads {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(format!(
                "the query holds a {} statement; only reads run here",
                statement_kind(statement)
            ))
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if query.locks.is_empty() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break("row locks (FOR UPDATE, FOR SHARE) are refused here".into())
        }
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        if select.into.is_some() {
            ControlFlow::Break("SELECT … INTO writes a table; only reads run here".into())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_ident(&mut self, ident: &Ident) -> ControlFlow<String> {
        let name = ident.value.to_lowercase();
        let refused = self.refused.iter().any(|refused| {
            name == *refused || (refused.ends_with('_') && name.starts_with(refused))
        });
        if refused {
            ControlFlow::Break(format!(
                "{name} reaches past the store's tables (files, other sessions, settings or \
                 SQL from a string); it is refused here"
            ))
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(sql: &str) -> Result<String, String> {
        check_read_only(Backend::Sqlite, sql)
    }

    fn postgres(sql: &str) -> Result<String, String> {
        check_read_only(Backend::Postgres, sql)
    }

    #[test]
    fn reads_run_as_parsed() {
        for sql in [
            "SELECT stage, COUNT(*) AS n FROM jobs GROUP BY stage",
            "WITH s AS (SELECT state FROM jobs) SELECT state FROM s ORDER BY 1 LIMIT 3",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1, 'a')",
            "EXPLAIN SELECT * FROM jobs",
            "SELECT json_extract(params, '$.i') FROM jobs WHERE state = 'queued'",
        ] {
            assert!(sqlite(sql).is_ok(), "{sql}: {:?}", sqlite(sql));
            assert!(postgres(sql).is_ok(), "{sql}: {:?}", postgres(sql));
        }
        assert!(sqlite("EXPLAIN QUERY PLAN SELECT * FROM jobs").is_ok());
        assert!(sqlite("SELECT name FROM pragma_table_info('jobs')").is_ok());
        assert_eq!(
            sqlite("pragma main.table_info(jobs);").unwrap(),
            "PRAGMA \"main\".table_info('jobs')"
        );
        assert_eq!(
            sqlite("PRAGMA integrity_check").unwrap(),
            "PRAGMA integrity_check"
        );
        assert!(sqlite("PRAGMA user_version").is_ok());
        assert!(postgres("SELECT pg_size_pretty(pg_database_size(current_database()))").is_ok());
        assert_eq!(sqlite("select 1 -- a comment").unwrap(), "SELECT 1");
    }

    #[test]
    fn anything_else_is_refused() {
        for sql in [
            "",
            "SELECT 1; SELECT 2",
            "SELECT 1; DELETE FROM jobs",
            "DELETE FROM jobs",
            "UPDATE jobs SET state = 'failed'",
            "INSERT INTO jobs DEFAULT VALUES",
            "DROP TABLE metrics",
            "CREATE TABLE t (x INT)",
            "WITH d AS (DELETE FROM jobs RETURNING id) SELECT * FROM d",
            "SELECT * INTO copy FROM jobs",
            "SELECT * FROM jobs FOR UPDATE",
            "EXPLAIN DELETE FROM jobs",
            "BEGIN",
        ] {
            assert!(sqlite(sql).is_err(), "{sql} passed on SQLite");
            assert!(postgres(sql).is_err(), "{sql} passed on Postgres");
        }
        for sql in [
            "VACUUM INTO 'copy.db'",
            "VACUUM",
            "ATTACH DATABASE 'other.db' AS other",
            "ATTACH 'other.db' AS other",
            "DETACH other",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA journal_mode(DELETE)",
            "PRAGMA user_version = 7",
            "PRAGMA query_only = OFF",
            "PRAGMA main.table_info = 3",
            "PRAGMA optimize",
            "PRAGMA incremental_vacuum",
            "SELECT load_extension('x')",
            "SELECT writefile('x', 'y')",
        ] {
            assert!(sqlite(sql).is_err(), "{sql} passed on SQLite");
        }
        for sql in [
            "COPY jobs TO '/tmp/out.txt'",
            "COPY (SELECT 1) TO PROGRAM 'true'",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
            "SELECT pg_catalog.pg_cancel_backend(1)",
            "SELECT \"pg_cancel_backend\"(1)",
            "SELECT PG_READ_FILE('/etc/hostname')",
            "SELECT pg_read_binary_file('/etc/hostname')",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT lo_export(1, '/tmp/x')",
            "SELECT lo_import('/etc/hostname')",
            "SELECT set_config('role', 'postgres', true)",
            "SELECT dblink_exec('dbname=x', 'DELETE FROM jobs')",
            "SELECT query_to_xml('DELETE FROM jobs', true, true, '')",
            "SELECT pg_advisory_lock(1)",
            "SELECT (SELECT pg_reload_conf())",
            "SET ROLE postgres",
            "RESET ROLE",
            "SHOW data_directory",
            "DO $$ BEGIN END $$",
            "LISTEN x",
            "VACUUM",
        ] {
            assert!(postgres(sql).is_err(), "{sql} passed on Postgres");
        }
    }

    #[test]
    fn a_refusal_says_what_and_why() {
        let message = sqlite("VACUUM INTO 'copy.db'").unwrap_err();
        assert!(message.contains("VACUUM"), "{message}");
        let message = postgres("SELECT 1; SELECT 2").unwrap_err();
        assert!(message.contains("2 statements"), "{message}");
        let message = postgres("SELECT pg_read_file('x')").unwrap_err();
        assert!(message.contains("pg_read_file"), "{message}");
        // Each backend refuses the other's functions too.
        assert!(sqlite("SELECT pg_terminate_backend(1)").is_err());
        assert!(postgres("SELECT load_extension('x')").is_err());
    }
}
