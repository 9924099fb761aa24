rule evaluate:
    input:
        embeddings=cell_file("embeddings.parquet"),
        anchors=cell_file("anchors.parquet"),
    output:
        metrics=cell_file("metrics.csv"),
        pr_curve=cell_file("pr_curve.parquet"),
        timing=cell_timing("evaluate"),
    log:
        cell_log("evaluate"),
    benchmark:
        cell_benchmark("evaluate")
    conda:
        "../envs/pytorch.yaml"
    resources:
        # A GPU slot only with evaluation.device auto or cuda.
        gpu=get_evaluate_gpu,
    params:
        evaluation=get_cell_evaluation,
        geometry=get_loss_geometry,
    script:
        "../workflow/scripts/evaluate.py"
