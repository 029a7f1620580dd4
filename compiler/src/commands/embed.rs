//! `kiln embed`: sentence embeddings from a compiled encoder and their similarity table.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

/// Embed texts with a compiled sentence encoder (tokenizer.json, mean
/// pooling and normalization as modules.json says) and print the cosine
/// similarity of every query with every document.
#[derive(clap::Args)]
pub struct Arguments {
    /// A `.kiln` artifact of a BERT-style encoder.
    pub artifact: PathBuf,
    /// The model's directory: tokenizer.json, modules.json and the pooling config.
    #[arg(long, value_name = "DIR")]
    pub model_dir: PathBuf,
    /// A query (repeat).
    #[arg(long = "query", value_name = "TEXT", required = true)]
    pub queries: Vec<String>,
    /// A document, e.g. an ad title (repeat).
    #[arg(long = "document", value_name = "TEXT", required = true)]
    pub documents: Vec<String>,
    /// auto (CUDA when present, else the simulator), cuda, cuda:N or sim.
    #[arg(long, default_value = "auto")]
    pub device: kiln_runtime::Device,
}

/// Runs `kiln embed`.
pub fn run(arguments: &Arguments) -> Result<()> {
    let Arguments { artifact, model_dir, queries, documents, device } = arguments;
    let device = device.clone();
    use kiln_compiler::embed::{cosine, embed};
    let model = std::sync::Arc::new(kiln_runtime::Model::from_artifact(kiln_cli::open_artifact(artifact)?));
    let mut session = kiln_runtime::Session::new(model, device)?;
    let texts: Vec<String> = queries.iter().chain(documents).cloned().collect();
    let started = Instant::now();
    let vectors = embed(&mut session, model_dir, &texts)?;
    let elapsed = started.elapsed();
    let width = queries.iter().map(|q| q.chars().count()).max().unwrap_or(0).min(40);
    let short = |text: &str, n: usize| -> String {
        let cut: String = text.chars().take(n).collect();
        if cut.chars().count() < text.chars().count() {
            format!("{}…", cut.chars().take(n - 1).collect::<String>())
        } else {
            cut
        }
    };
    println!("cosine similarity (rows: queries, columns: documents)");
    for (index, document) in documents.iter().enumerate() {
        println!("  [{}] {document}", index + 1);
    }
    print!("{:width$}", "");
    for index in 0..documents.len() {
        print!("  {:>6}", format!("[{}]", index + 1));
    }
    println!();
    for (query_index, query) in queries.iter().enumerate() {
        print!("{:width$}", short(query, width));
        for document_index in 0..documents.len() {
            let similarity = cosine(&vectors[query_index], &vectors[queries.len() + document_index]);
            print!("  {similarity:>6.3}");
        }
        println!();
    }
    println!(
        "{} texts in {elapsed:.2?} ({:.1} texts/s) on {}",
        texts.len(),
        texts.len() as f64 / elapsed.as_secs_f64(),
        session.device_description()
    );
    Ok(())
}
